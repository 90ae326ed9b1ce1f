// Package schema holds reporting's ClickHouse migrations (docs/clickhouse.md
// documents the tables for analysts).
package schema

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/parley-dev/parley/libs/chstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate brings the connection's database to the current schema.
func Migrate(ctx context.Context, conn driver.Conn, log *slog.Logger) error {
	sub, _ := fs.Sub(migrations, "migrations")
	return chstore.Migrate(ctx, conn, sub, log)
}
