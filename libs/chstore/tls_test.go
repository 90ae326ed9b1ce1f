package chstore_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/testenv"
)

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key, leaf := testenv.WritePKI(t, dir, "clickhouse.parley.svc")

	if tc, err := chstore.TLSConfig(config.ClickHouse{Addr: "127.0.0.1:9000"}); err != nil || tc != nil {
		t.Fatalf("no TLS settings: %+v, %v; want plain TCP", tc, err)
	}

	tc, err := chstore.TLSConfig(config.ClickHouse{Addr: "clickhouse.parley.svc:9440", TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	if tc.ServerName != "clickhouse.parley.svc" {
		t.Errorf("server name %q, want the host of the address", tc.ServerName)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.RootCAs, DNSName: tc.ServerName}); err != nil {
		t.Errorf("the CA file does not verify a certificate it signed: %v", err)
	}
	if len(tc.Certificates) != 1 || !strings.EqualFold(string(tc.Certificates[0].Certificate[0]), string(leaf.Raw)) {
		t.Errorf("client certificate not loaded: %d certificates", len(tc.Certificates))
	}

	tc, err = chstore.TLSConfig(config.ClickHouse{Addr: "10.0.0.5:9440", TLS: true, TLSServerName: "ch.example.com"})
	if err != nil || tc.ServerName != "ch.example.com" || tc.RootCAs != nil || len(tc.Certificates) != 0 {
		t.Fatalf("TLS with system roots and a server name: %+v, %v", tc, err)
	}

	garbage := filepath.Join(dir, "garbage.crt")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]config.ClickHouse{
		"missing CA":       {TLS: true, TLSCAFile: filepath.Join(dir, "nope.crt")},
		"CA without PEM":   {TLS: true, TLSCAFile: garbage},
		"cert without key": {TLS: true, TLSCertFile: cert},
		"key without cert": {TLS: true, TLSKeyFile: key},
		"key mismatch":     {TLS: true, TLSCertFile: ca, TLSKeyFile: key},
	} {
		if _, err := chstore.TLSConfig(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
