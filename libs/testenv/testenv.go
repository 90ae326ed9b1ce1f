// Package testenv gives integration tests real dependencies: an embedded NATS
// JetStream server, a throwaway database on the machine's PostgreSQL, and a
// private ClickHouse server. Everything is cleaned up when the test ends. A
// missing dependency fails the test with the command that installs it; it is
// never skipped.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/telemetry"
)

// NATSServer is an embedded NATS JetStream server owned by one test.
type NATSServer struct {
	*server.Server
	URL  string
	Port int
	Dir  string
	// SyncAlways: JetStream fsyncs before acknowledging (production setting).
	SyncAlways bool
	t          testing.TB
}

// NATS starts an embedded JetStream server on a free port with JetStream's
// default (lazy) sync.
func NATS(t testing.TB) *NATSServer {
	return NATSWithSync(t, false)
}

// NATSWithSync starts an embedded JetStream server; syncAlways makes it fsync
// every write before acknowledging (sync_interval: always).
func NATSWithSync(t testing.TB, syncAlways bool) *NATSServer {
	t.Helper()
	n := &NATSServer{Dir: t.TempDir(), Port: -1, SyncAlways: syncAlways, t: t}
	n.start()
	t.Cleanup(n.Shutdown)
	return n
}

func (n *NATSServer) start() {
	n.t.Helper()
	s, err := localinfra.StartNATS(localinfra.NATSOptions{Dir: n.Dir, Port: n.Port, SyncAlways: n.SyncAlways})
	if err != nil {
		n.t.Fatalf("testenv: %v", err)
	}
	n.Server = s
	n.Port = s.Addr().(*net.TCPAddr).Port
	n.URL = s.ClientURL()
}

// Shutdown stops the server (e.g. to test an outage); Restart brings it back
// on the same port with the same data.
func (n *NATSServer) Shutdown() {
	if n.Server != nil {
		n.Server.Shutdown()
		n.Server.WaitForShutdown()
	}
}

// Restart starts the server again after Shutdown.
func (n *NATSServer) Restart() {
	n.t.Helper()
	n.start()
}

// Postgres creates a throwaway database on the machine's PostgreSQL server
// (starting the server if it is stopped) and returns its URL. The database is
// dropped when the test ends. PARLEY_TEST_POSTGRES_URL, if set, names another
// server's admin URL to use instead.
func Postgres(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := os.Getenv("PARLEY_TEST_POSTGRES_URL")
	if admin == "" {
		unlock := lockFile(t, filepath.Join(os.TempDir(), "parley-testenv-postgres.lock"))
		var err error
		admin, err = localinfra.MachinePostgres(ctx)
		unlock()
		if err != nil {
			t.Fatalf("testenv: PostgreSQL: %v", err)
		}
	}
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		t.Fatalf("testenv: admin URL: %v", err)
	}
	name := "parley_t_" + randomHex(6)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testenv: connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	// The cleanup above connects with cfg as it is now (the admin database);
	// the URL for the test names the new database without touching cfg.
	return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Password, cfg.Host, cfg.Port, name)
}

// ClickHouseDB is a database on a private ClickHouse server.
type ClickHouseDB struct {
	Addr     string
	Database string
	Server   *localinfra.ClickHouse
}

// ClickHouse starts a private ClickHouse server with its data in a temp
// directory and creates an empty database on it. The server stops when the
// test ends.
func ClickHouse(t testing.TB) *ClickHouseDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := localinfra.StartClickHouse(ctx, localinfra.ClickHouseOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("testenv: ClickHouse: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop(20 * time.Second) })
	db := &ClickHouseDB{Addr: srv.Addr, Database: "parley_t_" + randomHex(4), Server: srv}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{srv.Addr}})
	if err != nil {
		t.Fatalf("testenv: ClickHouse connect: %v", err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db.Database); err != nil {
		t.Fatalf("testenv: ClickHouse create database: %v", err)
	}
	return db
}

// Telemetry returns telemetry for a service under test whose logs go to the
// test log.
func Telemetry(t testing.TB, service string) *telemetry.Telemetry {
	t.Helper()
	w := &testWriter{t: t}
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: service, LogLevel: "debug", LogOutput: w})
	if err != nil {
		t.Fatalf("testenv: telemetry: %v", err)
	}
	t.Cleanup(func() { w.closed.Store(true); _ = tel.Shutdown(context.Background()) })
	return tel
}

// testWriter sends log lines to the test log until the test is over; lines
// logged later (by goroutines still stopping) are dropped, not a panic.
type testWriter struct {
	t      testing.TB
	closed atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.closed.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

var _ io.Writer = (*testWriter)(nil)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lockFile serialises one-time machine setup across test binaries running in
// parallel.
func lockFile(t testing.TB, path string) (unlock func()) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("testenv: lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("testenv: lock: %v", err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }
}
