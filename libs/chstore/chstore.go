// Package chstore connects to ClickHouse over the native protocol and applies
// ordered SQL migrations. The migrations table and the SQL it runs work on
// ClickHouse 18.16 (what Debian ships, and what tests run against) and on
// current releases.
package chstore

import (
	"context"
	"crypto/tls"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/parley-dev/parley/libs/config"
)

var dbNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Open creates the database if needed and returns a connection whose default
// database is cfg.Database, as the writer (cfg.User).
func Open(ctx context.Context, cfg config.ClickHouse) (driver.Conn, error) {
	if !dbNameRe.MatchString(cfg.Database) {
		return nil, fmt.Errorf("chstore: database name %q is not a plain identifier", cfg.Database)
	}
	tlsCfg, err := TLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	boot, err := clickhouse.Open(options(cfg.Addr, clickhouse.Auth{Username: cfg.User, Password: cfg.Password}, tlsCfg))
	if err != nil {
		return nil, fmt.Errorf("chstore: %w", err)
	}
	defer boot.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := boot.Exec(pctx, "CREATE DATABASE IF NOT EXISTS "+cfg.Database); err != nil {
		return nil, fmt.Errorf("chstore: %s: %w", cfg.Addr, err)
	}
	return connect(ctx, cfg.Addr, clickhouse.Auth{Database: cfg.Database, Username: cfg.User, Password: cfg.Password}, tlsCfg)
}

// OpenQuery returns a connection for queries: as the read-only user
// cfg.QueryUser when one is configured, else as the writer (without creating
// anything). The database must exist.
func OpenQuery(ctx context.Context, cfg config.ClickHouse) (driver.Conn, error) {
	tlsCfg, err := TLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	auth := clickhouse.Auth{Database: cfg.Database, Username: cfg.User, Password: cfg.Password}
	if cfg.QueryUser != "" {
		auth.Username, auth.Password = cfg.QueryUser, cfg.QueryPassword
	}
	return connect(ctx, cfg.Addr, auth, tlsCfg)
}

func connect(ctx context.Context, addr string, auth clickhouse.Auth, tlsCfg *tls.Config) (driver.Conn, error) {
	conn, err := clickhouse.Open(options(addr, auth, tlsCfg))
	if err != nil {
		return nil, fmt.Errorf("chstore: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("chstore: ping %s as %s: %w", addr, auth.Username, err)
	}
	return conn, nil
}

func options(addr string, auth clickhouse.Auth, tlsCfg *tls.Config) *clickhouse.Options {
	return &clickhouse.Options{
		Addr:        []string{addr},
		Auth:        auth,
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		ReadTimeout: 60 * time.Second,
	}
}

// TLSConfig is the TLS configuration for cfg: nil (plain TCP) unless
// cfg.TLS is set or a TLS file is named. The CA file (PEM) replaces the
// system roots, the certificate and key (PEM, both or neither) are the
// client's, and the server name defaults to the host of cfg.Addr.
func TLSConfig(cfg config.ClickHouse) (*tls.Config, error) {
	if !cfg.TLS && cfg.TLSCAFile == "" && cfg.TLSCertFile == "" && cfg.TLSKeyFile == "" {
		return nil, nil
	}
	tc, err := config.ClientTLS(cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile, "PARLEY_CLICKHOUSE_TLS")
	if err != nil {
		return nil, fmt.Errorf("chstore: %w", err)
	}
	tc.ServerName = cfg.TLSServerName
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(cfg.Addr)
		if err != nil {
			host = cfg.Addr
		}
		tc.ServerName = host
	}
	return tc, nil
}

type migration struct {
	version uint32
	name    string
	body    string
}

// Migrate applies every NNN_name.sql file in fsys whose version is not yet
// recorded in schema_migrations. Statements in a file are separated by a
// semicolon at the end of a line; they should be idempotent
// (CREATE ... IF NOT EXISTS) because ClickHouse DDL is not transactional.
func Migrate(ctx context.Context, conn driver.Conn, fsys fs.FS, log *slog.Logger) error {
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version UInt32, name String, applied_at DateTime
	) ENGINE = ReplacingMergeTree ORDER BY version`); err != nil {
		return fmt.Errorf("chstore: schema_migrations: %w", err)
	}
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("chstore: read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	ms, err := load(fsys)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		start := time.Now()
		for _, stmt := range Statements(m.body) {
			if err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("chstore: migration %03d_%s: %w\n%s", m.version, m.name, err, stmt)
			}
		}
		if err := record(ctx, conn, m); err != nil {
			return fmt.Errorf("chstore: record migration %d: %w", m.version, err)
		}
		if log != nil {
			log.Info("clickhouse migration applied", "version", m.version, "name", m.name, "duration", time.Since(start))
		}
	}
	return nil
}

// record inserts through a batch: ClickHouse 18.16 does not accept inline
// INSERT ... VALUES sent as a plain query by the native driver.
func record(ctx context.Context, conn driver.Conn, m migration) error {
	b, err := conn.PrepareBatch(ctx, `INSERT INTO schema_migrations (version, name, applied_at)`)
	if err != nil {
		return err
	}
	if err := b.Append(m.version, m.name, time.Now().UTC()); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}

func load(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("chstore: %w", err)
	}
	var ms []migration
	seen := map[uint32]string{}
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("chstore: migration file %q must be named NNN_name.sql", e.Name())
		}
		if prev, dup := seen[uint32(v)]; dup {
			return nil, fmt.Errorf("chstore: migrations %q and %q share version %d", prev, e.Name(), v)
		}
		seen[uint32(v)] = e.Name()
		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: uint32(v), name: name, body: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// Statements splits a migration body into statements: a statement ends with a
// semicolon at the end of a line; lines starting with "--" are comments.
func Statements(body string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(body, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			if s != "" {
				out = append(out, s)
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}
