// Package testsvc helps integration tests run a service: start it for the
// length of a test, pick its addresses, dial it, and create tenants with API
// keys. (Infrastructure lives in testenv, which tenancy's own tests use.)
package testsvc

import (
	"context"
	"fmt"
	"testing"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Serve runs a service (its Run function bound to a config) until the test
// ends; an error from it fails the test.
func Serve(t testing.TB, name string, run func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
}

// Addrs returns free loopback addresses for a service's gRPC and admin
// servers.
func Addrs(t testing.TB) (grpcAddr, adminAddr string) {
	t.Helper()
	g, err := localinfra.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a, err := localinfra.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", g), fmt.Sprintf("127.0.0.1:%d", a)
}

// Dial connects to a gRPC address for the rest of the test.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Tenants creates the tenants (tenancy schema included) on the database at
// pgURL, each with one API key of the given scopes, and returns the keys by
// tenant.
func Tenants(t testing.TB, pgURL string, scopes []string, tenants ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := tenancy.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	store := tenancy.NewStore(pool)
	keys := map[string]string{}
	for _, tn := range tenants {
		if err := store.CreateTenant(ctx, tn, ""); err != nil {
			t.Fatal(err)
		}
		if keys[tn], _, err = store.CreateAPIKey(ctx, tn, "test", scopes); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}
