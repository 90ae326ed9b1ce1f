package export_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/services/reporting/internal/export"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
	"gocloud.dev/blob/fileblob"
)

func newStore(t *testing.T) *export.Store {
	t.Helper()
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := statestore.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	return export.NewStore(pool)
}

func TestACrashedReplicasJobIsTakenOver(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.Create(ctx, "acme", "e1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	a, err := s.Claim(ctx, "replica-a", time.Minute)
	if err != nil || a == nil || a.State != export.Running {
		t.Fatalf("claim a: %v %v", a, err)
	}
	// Claimed and fresh: nobody else gets it.
	if b, err := s.Claim(ctx, "replica-b", time.Minute); err != nil || b != nil {
		t.Fatalf("claimed twice: %v %v", b, err)
	}
	// a stops heartbeating (crashes); once stale, b takes the job over and
	// a, were it to come back, may no longer write it.
	time.Sleep(20 * time.Millisecond)
	b, err := s.Claim(ctx, "replica-b", 10*time.Millisecond)
	if err != nil || b == nil || b.ExportID != "e1" {
		t.Fatalf("takeover: %v %v", b, err)
	}
	if ok, err := s.Heartbeat(ctx, a, "replica-a", 5); err != nil || ok {
		t.Fatalf("old owner heartbeat: %v %v", ok, err)
	}
	if ok, err := s.Heartbeat(ctx, b, "replica-b", 5); err != nil || !ok {
		t.Fatalf("new owner heartbeat: %v %v", ok, err)
	}
	// Another tenant cannot see or cancel it.
	if _, err := s.Cancel(ctx, "globex", "e1"); err != export.ErrNotFound {
		t.Fatalf("other tenant cancel: %v", err)
	}
}

func TestSweeperDeletesExpiredFiles(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	bucket, err := fileblob.OpenBucket(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	now := time.Now()
	for _, id := range []string{"old", "new"} {
		if _, err := s.Create(ctx, "acme", id, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		j, err := s.Claim(ctx, "r", time.Minute)
		if err != nil || j == nil {
			t.Fatal(err)
		}
		key := export.Key("acme", id, export.CSV)
		if err := bucket.WriteAll(ctx, key, []byte("a\n"), nil); err != nil {
			t.Fatal(err)
		}
		expires := now.Add(time.Hour)
		if id == "old" {
			expires = now.Add(-time.Second)
		}
		if ok, err := s.Succeed(ctx, j, "r", key, &export.Manifest{RowCount: 0}, expires); err != nil || !ok {
			t.Fatalf("succeed: %v %v", ok, err)
		}
	}
	r := export.NewRunner(export.RunnerDeps{Store: s, Bucket: bucket, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now }})
	if err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := bucket.Exists(ctx, export.Key("acme", "old", export.CSV)); ok {
		t.Fatal("expired file kept")
	}
	if ok, _ := bucket.Exists(ctx, export.Key("acme", "new", export.CSV)); !ok {
		t.Fatal("live file deleted")
	}
	if j, _ := s.Get(ctx, "acme", "old"); j.State != export.Expired {
		t.Fatalf("old: %v", j.State)
	}
	if j, _ := s.Get(ctx, "acme", "new"); j.State != export.Succeeded {
		t.Fatalf("new: %v", j.State)
	}
}
