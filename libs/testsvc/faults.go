package testsvc

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// FlakyProxy forwards TCP connections to a target (a database); while
// down it drops them and refuses new ones, on the same address.
type FlakyProxy struct {
	lis   net.Listener
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

// StartFlakyProxy listens on a free loopback port until the test ends.
func StartFlakyProxy(t testing.TB, target string) *FlakyProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FlakyProxy{lis: lis}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			down := p.down
			p.mu.Unlock()
			if down {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return p
}

// Addr is the proxy's address.
func (p *FlakyProxy) Addr() string { return p.lis.Addr().String() }

// SetDown cuts (true) or restores (false) the connection.
func (p *FlakyProxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// CheckReady reports whether a service's /readyz on its admin address
// answers ready with the named check ok.
func CheckReady(admin, check string) bool {
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return false
	}
	return resp.StatusCode == http.StatusOK && body.Checks[check] == "ok"
}
