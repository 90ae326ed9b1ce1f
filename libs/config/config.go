// Package config loads service configuration from environment variables.
//
// Configuration structs declare their variables with `env` tags and their
// defaults with `envDefault` tags, so the struct definition is also the
// documentation of every setting (see README.md, "Configuration").
package config

import (
	"fmt"
	"net/http"
	"time"

	"github.com/caarlos0/env/v11"
)

// Load returns a T filled from the environment, with defaults applied.
func Load[T any]() (T, error) {
	cfg, err := env.ParseAs[T]()
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// NATS is how a service reaches the event log.
type NATS struct {
	// URL of the NATS server(s), comma separated.
	URL string `env:"PARLEY_NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	// Replicas of each stream Parley creates (1 locally, 3 in production).
	Replicas int `env:"PARLEY_STREAM_REPLICAS" envDefault:"1"`
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values.
	DuplicateWindow time.Duration `env:"PARLEY_DUPLICATE_WINDOW" envDefault:"2m"`
	// User and Password authenticate with a NATS user (the service's own;
	// see docs/operations.md, "NATS permissions").
	User     string `env:"PARLEY_NATS_USER"`
	Password string `env:"PARLEY_NATS_PASSWORD"`
	// CredsFile is a NATS .creds file (JWT and nkey seed), instead of a
	// user and password.
	CredsFile string `env:"PARLEY_NATS_CREDS"`
	// NKeySeedFile holds a user nkey seed, instead of a user and password.
	NKeySeedFile string `env:"PARLEY_NATS_NKEY_SEED_FILE"`
	// TLS to the server: CA bundle to verify it, client certificate and key
	// for mutual TLS. Any of them turns TLS on.
	TLSCAFile   string `env:"PARLEY_NATS_TLS_CA"`
	TLSCertFile string `env:"PARLEY_NATS_TLS_CERT"`
	TLSKeyFile  string `env:"PARLEY_NATS_TLS_KEY"`
	// WaitForStreams makes a service wait for PARLEY_CONV and PARLEY_DLQ to
	// exist instead of creating or updating them, for users without the
	// permission to (every service but ingest in the Kubernetes manifests).
	WaitForStreams bool `env:"PARLEY_NATS_WAIT_FOR_STREAMS" envDefault:"false"`
}

// Postgres is how a service reaches PostgreSQL.
type Postgres struct {
	// URL is a libpq connection string or URL. TLS is set in it:
	// sslmode=verify-full&sslrootcert=/path/ca.crt (and sslcert, sslkey for
	// client certificates).
	URL string `env:"PARLEY_POSTGRES_URL" envDefault:"postgres://parley:parley@127.0.0.1:55432/parley?sslmode=disable"`
	// MaxConns caps the pool size.
	MaxConns int32 `env:"PARLEY_POSTGRES_MAX_CONNS" envDefault:"10"`
}

// ClickHouse is how a service reaches ClickHouse (native protocol).
type ClickHouse struct {
	// Addr is host:port of the native protocol listener.
	Addr string `env:"PARLEY_CLICKHOUSE_ADDR" envDefault:"127.0.0.1:19000"`
	// Database holds Parley's tables.
	Database string `env:"PARLEY_CLICKHOUSE_DATABASE" envDefault:"parley"`
	// User and Password are the writer: it creates the database and tables
	// and projects events.
	User     string `env:"PARLEY_CLICKHOUSE_USER" envDefault:"default"`
	Password string `env:"PARLEY_CLICKHOUSE_PASSWORD"`
	// QueryUser and QueryPassword are a read-only user (readonly=2 profile)
	// for the query API; empty: queries use the writer.
	QueryUser     string `env:"PARLEY_CLICKHOUSE_QUERY_USER"`
	QueryPassword string `env:"PARLEY_CLICKHOUSE_QUERY_PASSWORD"`
	// TLS turns on TLS for the native protocol (ClickHouse's tcp_port_secure,
	// 9440 by default). CA verifies the server (system roots when empty),
	// Cert and Key are a client certificate, ServerName overrides the name
	// checked in the server's certificate (default: the host of Addr).
	TLS           bool   `env:"PARLEY_CLICKHOUSE_TLS" envDefault:"false"`
	TLSCAFile     string `env:"PARLEY_CLICKHOUSE_TLS_CA"`
	TLSCertFile   string `env:"PARLEY_CLICKHOUSE_TLS_CERT"`
	TLSKeyFile    string `env:"PARLEY_CLICKHOUSE_TLS_KEY"`
	TLSServerName string `env:"PARLEY_CLICKHOUSE_TLS_SERVER_NAME"`
}

// Server is the network identity of a service process.
type Server struct {
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"PARLEY_LOG_LEVEL" envDefault:"info"`
	// ShutdownTimeout bounds graceful shutdown (drain, ack, close).
	ShutdownTimeout time.Duration `env:"PARLEY_SHUTDOWN_TIMEOUT" envDefault:"20s"`
	// PprofEnabled serves /debug/pprof on the admin port.
	PprofEnabled bool `env:"PARLEY_PPROF_ENABLED" envDefault:"false"`
	HTTP         HTTP
	GRPC         GRPC
}

// HTTP bounds the HTTP servers of a service (the HTTP/JSON API and the admin
// port). Zero values take the defaults.
type HTTP struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration `env:"PARLEY_HTTP_READ_HEADER_TIMEOUT" envDefault:"5s"`
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration `env:"PARLEY_HTTP_READ_TIMEOUT" envDefault:"30s"`
	// WriteTimeout bounds a request from the end of its headers to the end
	// of the response.
	WriteTimeout time.Duration `env:"PARLEY_HTTP_WRITE_TIMEOUT" envDefault:"60s"`
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration `env:"PARLEY_HTTP_IDLE_TIMEOUT" envDefault:"120s"`
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int `env:"PARLEY_HTTP_MAX_HEADER_BYTES" envDefault:"65536"`
}

// NewServer returns an http.Server for h with these bounds (defaults for
// zero values).
func (c HTTP) NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: orDefault(c.ReadHeaderTimeout, 5*time.Second),
		ReadTimeout:       orDefault(c.ReadTimeout, 30*time.Second),
		WriteTimeout:      orDefault(c.WriteTimeout, 60*time.Second),
		IdleTimeout:       orDefault(c.IdleTimeout, 120*time.Second),
		MaxHeaderBytes:    orDefault(c.MaxHeaderBytes, 64<<10),
	}
}

// GRPC bounds a service's gRPC server. Zero values take the defaults.
type GRPC struct {
	// MaxConcurrentStreams caps concurrent calls on one client connection.
	MaxConcurrentStreams uint32 `env:"PARLEY_GRPC_MAX_CONCURRENT_STREAMS" envDefault:"1000"`
	// KeepaliveMinTime is the shortest interval between a client's pings
	// the server tolerates; a client pinging more often is disconnected
	// (GOAWAY too_many_pings).
	KeepaliveMinTime time.Duration `env:"PARLEY_GRPC_KEEPALIVE_MIN_TIME" envDefault:"10s"`
	// KeepalivePermitWithoutStream lets clients ping while they have no
	// call in flight (still no more often than KeepaliveMinTime).
	KeepalivePermitWithoutStream bool `env:"PARLEY_GRPC_KEEPALIVE_PERMIT_WITHOUT_STREAM" envDefault:"true"`
	// KeepaliveTime is how long a connection may be idle before the server
	// pings the client, and KeepaliveTimeout how long it waits for the
	// answer before closing the connection.
	KeepaliveTime    time.Duration `env:"PARLEY_GRPC_KEEPALIVE_TIME" envDefault:"1m"`
	KeepaliveTimeout time.Duration `env:"PARLEY_GRPC_KEEPALIVE_TIMEOUT" envDefault:"20s"`
	// MaxConnectionAge closes connections older than this (gracefully), so
	// clients re-resolve and spread over new replicas; 0: never.
	MaxConnectionAge time.Duration `env:"PARLEY_GRPC_MAX_CONNECTION_AGE" envDefault:"0s"`
}

// WithDefaults returns c with defaults for zero values.
func (c GRPC) WithDefaults() GRPC {
	c.MaxConcurrentStreams = orDefault(c.MaxConcurrentStreams, 1000)
	c.KeepaliveMinTime = orDefault(c.KeepaliveMinTime, 10*time.Second)
	c.KeepaliveTime = orDefault(c.KeepaliveTime, time.Minute)
	c.KeepaliveTimeout = orDefault(c.KeepaliveTimeout, 20*time.Second)
	return c
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
