package testenv

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
)

// WaitListening waits until something accepts connections on addr.
func WaitListening(t testing.TB, addr string) {
	t.Helper()
	for range 250 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("testenv: nothing listens on %s", addr)
}

// AssertSlowClientsCutOff checks that the HTTP server on addr, configured
// with lim, disconnects a client that sends its headers a byte at a time
// (slowloris) once lim.ReadHeaderTimeout has passed, and one that sends its
// body a byte at a time once lim.ReadTimeout has passed.
func AssertSlowClientsCutOff(t testing.TB, addr string, lim config.HTTP) {
	t.Helper()
	headers := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100) + "\r\n\r\n"
	if d := trickle(t, addr, "", headers); d > lim.ReadHeaderTimeout+2*time.Second {
		t.Errorf("slow headers: connection open for %s; read-header timeout %s", d, lim.ReadHeaderTimeout)
	}
	body := "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n"
	if d := trickle(t, addr, body, string(make([]byte, 200))); d > lim.ReadTimeout+2*time.Second {
		t.Errorf("slow body: connection open for %s; read timeout %s", d, lim.ReadTimeout)
	}
}

// trickle sends prefix at once, then rest a byte every 20ms, and returns
// how long the server kept the connection open. It gives up (returning the
// full duration) when the whole of rest was sent.
func trickle(t testing.TB, addr, prefix, rest string) time.Duration {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		// The server closes the connection (possibly after a 408 answer).
		_, _ = io.Copy(io.Discard, c)
		close(closed)
	}()
	if _, err := io.WriteString(c, prefix); err != nil {
		return time.Since(start)
	}
	for i := range len(rest) {
		select {
		case <-closed:
			return time.Since(start)
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := c.Write([]byte{rest[i]}); err != nil {
			return time.Since(start)
		}
	}
	select {
	case <-closed:
	case <-time.After(time.Second):
	}
	return time.Since(start)
}
