package httpgw_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/httpgw"
	"github.com/parley-dev/parley/libs/testenv"
)

func serve(t *testing.T, lim config.HTTP) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpgw.Serve(ctx, addr, h, nil, lim) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.WaitListening(t, addr)
	return addr
}

// TestServeCutsOffSlowClients: the HTTP/JSON edge disconnects slowloris
// clients (headers or body a byte at a time) after its timeouts.
func TestServeCutsOffSlowClients(t *testing.T) {
	lim := config.HTTP{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond}
	testenv.AssertSlowClientsCutOff(t, serve(t, lim), lim)
}

// TestServeLimitsHeaderBytes: headers over MaxHeaderBytes are refused with
// 431, and the default limit applies when none is configured.
func TestServeLimitsHeaderBytes(t *testing.T) {
	for _, c := range []struct {
		lim  config.HTTP
		size int
	}{{config.HTTP{MaxHeaderBytes: 4 << 10}, 16 << 10}, {config.HTTP{}, 256 << 10}} {
		addr := serve(t, c.lim)
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("a", c.size))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("limits %+v, %d-byte header: status %d, want 431", c.lim, c.size, resp.StatusCode)
		}
	}
}

// TestHTTPDefaults: a zero config.HTTP still yields bounded servers.
func TestHTTPDefaults(t *testing.T) {
	s := config.HTTP{}.NewServer(http.NotFoundHandler())
	if s.ReadHeaderTimeout != 5*time.Second || s.ReadTimeout != 30*time.Second || s.WriteTimeout != 60*time.Second ||
		s.IdleTimeout != 120*time.Second || s.MaxHeaderBytes != 64<<10 {
		t.Fatalf("defaults: %+v", s)
	}
}
