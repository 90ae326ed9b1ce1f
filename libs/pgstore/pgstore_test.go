package pgstore_test

import (
	"context"
	"crypto/x509"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
)

// TestConfigTLS: the TLS settings of PARLEY_POSTGRES_URL reach the
// connection: verify-full checks the server's certificate against
// sslrootcert and its name, and presents sslcert/sslkey.
func TestConfigTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key, leaf := testenv.WritePKI(t, dir, "postgresql.parley.svc")
	q := url.Values{"sslmode": {"verify-full"}, "sslrootcert": {ca}, "sslcert": {cert}, "sslkey": {key}}
	pc, err := pgstore.Config(config.Postgres{URL: "postgres://parley:s3cret@postgresql.parley.svc:5432/parley?" + q.Encode(), MaxConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	tc := pc.ConnConfig.TLSConfig
	if tc == nil || tc.InsecureSkipVerify && tc.VerifyPeerCertificate == nil {
		t.Fatalf("verify-full without certificate verification: %+v", tc)
	}
	if tc.ServerName != "postgresql.parley.svc" || len(tc.Certificates) != 1 || pc.MaxConns != 3 {
		t.Fatalf("server name %q, %d client certificates, max conns %d", tc.ServerName, len(tc.Certificates), pc.MaxConns)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.RootCAs, DNSName: tc.ServerName}); err != nil {
		t.Fatalf("sslrootcert does not verify the server: %v", err)
	}
	if len(pc.ConnConfig.Fallbacks) != 0 {
		t.Fatalf("verify-full must not fall back to plain connections: %d fallbacks", len(pc.ConnConfig.Fallbacks))
	}

	pc, err = pgstore.Config(config.Postgres{URL: "postgres://parley:s3cret@127.0.0.1:5432/parley?sslmode=disable"})
	if err != nil || pc.ConnConfig.TLSConfig != nil {
		t.Fatalf("sslmode=disable: %+v, %v", pc.ConnConfig.TLSConfig, err)
	}

	_, err = pgstore.Config(config.Postgres{URL: "postgres://parley:s3cret@h/parley?sslmode=verify-full&sslrootcert=" + dir + "/missing.crt"})
	if err == nil {
		t.Fatal("a missing sslrootcert was accepted")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("the error shows the password: %v", err)
	}
}

// Two replicas doing the same locked work at once take turns.
func TestWithLockSerializes(t *testing.T) {
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := pgstore.WithLock(ctx, pool, 4242, func(context.Context) error {
				n := inside.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(20 * time.Millisecond)
				inside.Add(-1)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d ran the locked work at once, want 1", most.Load())
	}
}
