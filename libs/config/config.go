// Package config loads service configuration from environment variables.
//
// Configuration structs declare their variables with `env` tags and their
// defaults with `envDefault` tags, so the struct definition is also the
// documentation of every setting (see README.md, "Configuration").
package config

import (
	"fmt"
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
}

// Postgres is how a service reaches PostgreSQL.
type Postgres struct {
	// URL is a libpq connection string or URL.
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
	User     string `env:"PARLEY_CLICKHOUSE_USER" envDefault:"default"`
	Password string `env:"PARLEY_CLICKHOUSE_PASSWORD"`
}

// Server is the network identity of a service process.
type Server struct {
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"PARLEY_LOG_LEVEL" envDefault:"info"`
	// ShutdownTimeout bounds graceful shutdown (drain, ack, close).
	ShutdownTimeout time.Duration `env:"PARLEY_SHUTDOWN_TIMEOUT" envDefault:"20s"`
}
