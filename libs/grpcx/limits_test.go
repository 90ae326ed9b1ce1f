package grpcx_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/testenv"
	"golang.org/x/net/http2"
)

// startGRPC serves an empty grpcx server with the given limits on a loopback
// port and returns its address.
func startGRPC(t *testing.T, lim config.GRPC) string {
	t.Helper()
	tel := testenv.Telemetry(t, "grpcx-test")
	srv, err := grpcx.NewServer(grpcx.ServerConfig{Telemetry: tel, Auth: fakeAuth{}, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, lis, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	return lis.Addr().String()
}

// h2conn is a raw HTTP/2 client connection: the test controls every frame.
type h2conn struct {
	c  net.Conn
	fr *http2.Framer
}

func dialH2(t *testing.T, addr string) *h2conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, bufio.NewReader(c))
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return &h2conn{c: c, fr: fr}
}

// serverSettings reads frames until the server's (non-ack) SETTINGS frame.
func (h *h2conn) serverSettings(t *testing.T) map[http2.SettingID]uint32 {
	t.Helper()
	_ = h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			out := map[http2.SettingID]uint32{}
			_ = sf.ForeachSetting(func(s http2.Setting) error { out[s.ID] = s.Val; return nil })
			return out
		}
	}
}

// pingUntilGoAway sends n pings spaced by every and reports the GOAWAY the
// server sent, if any, while reading its answers.
func (h *h2conn) pingUntilGoAway(t *testing.T, n int, every time.Duration) *http2.GoAwayFrame {
	t.Helper()
	frames := make(chan http2.Frame, 64)
	go func() {
		defer close(frames)
		for {
			_ = h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			f, err := h.fr.ReadFrame()
			if err != nil {
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				// The framer reuses frames; keep a copy.
				cp := *ga
				cp.FrameHeader = ga.FrameHeader
				frames <- &cp
				continue
			}
			frames <- nil
		}
	}()
	for i := range n {
		if err := h.fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server closed the connection
		}
		time.Sleep(every)
	}
	deadline := time.After(time.Second)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return nil
			}
			if ga, isGA := f.(*http2.GoAwayFrame); isGA && ga != nil {
				return ga
			}
		case <-deadline:
			return nil
		}
	}
}

// TestGRPCKeepaliveEnforcement: a client pinging more often than
// KeepaliveMinTime is sent GOAWAY too_many_pings; one pinging at the
// permitted rate, without calls in flight, keeps its connection.
func TestGRPCKeepaliveEnforcement(t *testing.T) {
	addr := startGRPC(t, config.GRPC{KeepaliveMinTime: 200 * time.Millisecond, KeepalivePermitWithoutStream: true})

	polite := dialH2(t, addr)
	if ga := polite.pingUntilGoAway(t, 5, 300*time.Millisecond); ga != nil {
		t.Fatalf("a client pinging every 300ms (min 200ms) got GOAWAY %v %q", ga.ErrCode, ga.DebugData())
	}

	rude := dialH2(t, addr)
	ga := rude.pingUntilGoAway(t, 10, 10*time.Millisecond)
	if ga == nil {
		t.Fatal("a client pinging every 10ms was not sent GOAWAY")
	}
	if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || !strings.Contains(string(ga.DebugData()), "too_many_pings") {
		t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
	}
}

// TestGRPCMaxConcurrentStreams: the server advertises the configured stream
// limit, and the documented default when none is configured.
func TestGRPCMaxConcurrentStreams(t *testing.T) {
	for _, c := range []struct {
		lim  config.GRPC
		want uint32
	}{{config.GRPC{MaxConcurrentStreams: 7}, 7}, {config.GRPC{}, 1000}} {
		s := dialH2(t, startGRPC(t, c.lim)).serverSettings(t)
		if got, ok := s[http2.SettingMaxConcurrentStreams]; !ok || got != c.want {
			t.Errorf("limits %+v: SETTINGS_MAX_CONCURRENT_STREAMS = %d (sent: %v), want %d", c.lim, got, ok, c.want)
		}
	}
}

// TestAdminPprofOffByDefault: /debug/pprof answers 404 unless enabled.
func TestAdminPprofOffByDefault(t *testing.T) {
	tel := testenv.Telemetry(t, "grpcx-test")
	for _, enabled := range []bool{false, true} {
		addr := serveAdmin(t, grpcx.NewAdmin(tel.Registry, tel.Logger, grpcx.AdminOptions{Pprof: enabled}))
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusNotFound
			if enabled {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Errorf("pprof enabled=%v: GET %s = %d, want %d", enabled, path, resp.StatusCode, want)
			}
		}
	}
}

// TestAdminCutsOffSlowClients: a client that sends its headers a byte at a
// time (slowloris) is disconnected after the read-header timeout, and one
// that trickles its body after the read timeout.
func TestAdminCutsOffSlowClients(t *testing.T) {
	tel := testenv.Telemetry(t, "grpcx-test")
	lim := config.HTTP{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond}
	addr := serveAdmin(t, grpcx.NewAdmin(tel.Registry, tel.Logger, grpcx.AdminOptions{HTTP: lim}))
	testenv.AssertSlowClientsCutOff(t, addr, lim)
}

func serveAdmin(t *testing.T, a *grpcx.Admin) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, addr) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.WaitListening(t, addr)
	return addr
}
