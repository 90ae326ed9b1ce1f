package natsauth_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/natsauth"
	"github.com/parley-dev/parley/libs/testenv"
)

// TestClientTLS: with PARLEY_NATS_TLS_* a service connects to a server that
// requires TLS and a client certificate; without them it cannot.
func TestClientTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key, _ := testenv.WritePKI(t, dir, "localhost")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, TLS: true, TLSVerify: true,
		TLSTimeout: 2, TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	url := "nats://localhost:" + portOf(t, srv)

	opts, err := natsauth.ClientOptions("reporting", config.NATS{TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, append(opts, nats.Timeout(3*time.Second))...)
	if err != nil {
		t.Fatalf("TLS with a client certificate: %v", err)
	}
	if !nc.TLSRequired() {
		t.Error("connection is not TLS")
	}
	nc.Close()

	opts, _ = natsauth.ClientOptions("reporting", config.NATS{TLSCAFile: ca})
	if nc, err := nats.Connect(url, append(opts, nats.Timeout(3*time.Second))...); err == nil {
		nc.Close()
		t.Error("connected without the client certificate the server requires")
	}
	if nc, err := nats.Connect(url, nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Error("connected without TLS")
	}

	for name, bad := range map[string]config.NATS{
		"cert without key":   {TLSCertFile: cert},
		"missing CA":         {TLSCAFile: dir + "/missing.crt"},
		"two kinds of creds": {User: "u", Password: "p", CredsFile: "x.creds"},
	} {
		if _, err := natsauth.ClientOptions("reporting", bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func portOf(t *testing.T, s *server.Server) string {
	t.Helper()
	_, port, err := net.SplitHostPort(s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return port
}
