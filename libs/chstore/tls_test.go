package chstore_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
)

// writePKI writes a CA and a leaf certificate signed by it (for name) with
// its key, as PEM files in dir, and returns their paths and the parsed leaf.
func writePKI(t *testing.T, dir, name string) (ca, cert, key string, leaf *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	lKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	lDER, err := x509.CreateCertificate(rand.Reader, lTmpl, caCert, &lKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(lDER)
	keyDER, _ := x509.MarshalECPrivateKey(lKey)
	write := func(file, typ string, der []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.crt", "CERTIFICATE", caDER), write("client.crt", "CERTIFICATE", lDER), write("client.key", "EC PRIVATE KEY", keyDER), leaf
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key, leaf := writePKI(t, dir, "clickhouse.parley.svc")

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
