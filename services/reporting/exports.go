package reporting

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/services/reporting/internal/api"
	"github.com/parley-dev/parley/services/reporting/internal/export"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"github.com/parley-dev/parley/services/reporting/internal/share"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
)

// ExportConfig configures exports (docs/exports.md).
type ExportConfig struct {
	// BucketURL is where files are kept: s3://bucket?endpoint=...&region=...
	// or file:///dir. Empty: the directory Dir.
	BucketURL string `env:"PARLEY_EXPORT_BUCKET_URL" envDefault:""`
	// Dir holds the files when no bucket URL is set.
	Dir string `env:"PARLEY_EXPORT_DIR" envDefault:".parley/exports"`
	// Retention is how long a file is kept before the sweeper deletes it.
	Retention time.Duration `env:"PARLEY_EXPORT_RETENTION" envDefault:"168h"`
	// LinkTTL is how long a download link stays valid (never past the
	// file's retention).
	LinkTTL time.Duration `env:"PARLEY_EXPORT_LINK_TTL" envDefault:"24h"`
	// Secret signs download links (at least 32 bytes). Empty: a random
	// secret kept in PostgreSQL, shared by all replicas.
	Secret string `env:"PARLEY_EXPORT_SECRET" envDefault:""`
	// Heartbeat is how often a running job records progress; a job without
	// one for 10 heartbeats (at least 30s) is taken over by another replica.
	Heartbeat time.Duration `env:"PARLEY_EXPORT_HEARTBEAT" envDefault:"1s"`
	// WrapSource, when set, wraps the rows' source (tests).
	WrapSource func(export.Source) export.Source `env:"-"`
}

// exports is the export service, its background runner and downloads.
type exports struct {
	svc       *export.Service
	runner    *export.Runner
	downloads *export.Downloads
}

// startExports opens the bucket and builds the export parts.
func startExports(ctx context.Context, b *service.Base, cfg Config, reader *query.Reader, states *statestore.Store, wm *api.Watermark) (*exports, error) {
	bucket, err := openBucket(ctx, cfg.Export)
	if err != nil {
		return nil, err
	}
	b.OnClose(func() { _ = bucket.Close() })
	secret := []byte(cfg.Export.Secret)
	if len(secret) == 0 {
		if secret, err = states.Secret(ctx, "export-link"); err != nil {
			return nil, err
		}
	}
	signer, err := share.NewSigner(secret)
	if err != nil {
		return nil, fmt.Errorf("PARLEY_EXPORT_SECRET: %w", err)
	}
	store := export.NewStore(b.PG)
	var source export.Source = reader
	if cfg.Export.WrapSource != nil {
		source = cfg.Export.WrapSource(source)
	}
	applied := func(ctx context.Context) (uint64, error) {
		f, err := wm.Read(ctx)
		return f.GetAppliedSequence(), err
	}
	return &exports{
		svc: export.NewService(export.ServiceDeps{Store: store, Signer: signer, BaseURL: cfg.ShareBaseURL, LinkTTL: cfg.Export.LinkTTL,
			Log: b.Log, Now: time.Now}),
		runner: export.NewRunner(export.RunnerDeps{Store: store, Bucket: bucket, Source: source, Applied: applied, TimeZones: b.Tenancy,
			Bots: b.Tenancy, ConsoleBaseURL: cfg.ConsoleBaseURL, Owner: cfg.Member, Retention: cfg.Export.Retention,
			Heartbeat: cfg.Export.Heartbeat, Stale: max(30*time.Second, 10*cfg.Export.Heartbeat), Log: b.Log, Now: time.Now}),
		downloads: &export.Downloads{Store: store, Bucket: bucket, Signer: signer, Log: b.Log, Now: time.Now},
	}, nil
}

func openBucket(ctx context.Context, c ExportConfig) (*blob.Bucket, error) {
	if c.BucketURL != "" {
		return export.OpenBucket(ctx, c.BucketURL)
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("PARLEY_EXPORT_DIR: %w", err)
	}
	bucket, err := fileblob.OpenBucket(dir, &fileblob.Options{CreateDir: true})
	if err != nil {
		return nil, fmt.Errorf("PARLEY_EXPORT_DIR: %w", err)
	}
	return bucket, nil
}
