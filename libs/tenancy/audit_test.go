package tenancy

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/grpcx"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestAuditLog: a mutating call and a denied call each leave a row with the
// caller's tenant, key id, method, outcome and peer; a read call none.
func TestAuditLog(t *testing.T) {
	ctx := context.Background()
	s, _, _ := proxiedStore(t, AuthConfig{})
	w := NewAuditWriter(s.pool, AuditConfig{}, nil)
	defer w.Close()
	if err := s.CreateTenant(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	ingestKey, ingestID, err := s.CreateAPIKey(ctx, "acme", "", []string{grpcx.ScopeIngest})
	if err != nil {
		t.Fatal(err)
	}
	readKey, readID, err := s.CreateAPIKey(ctx, "acme", "", []string{grpcx.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	conn := serveEcho(t, s, w)
	before := time.Now()
	if err := callAs(conn, "Append", ingestKey, "203.0.113.7"); err != nil {
		t.Fatal(err)
	}
	if c := status.Code(callAs(conn, "Append", readKey, "")); c != codes.PermissionDenied {
		t.Fatalf("read key appending: %s", c)
	}
	if err := callAs(conn, "List", readKey, ""); err != nil {
		t.Fatal(err)
	}
	w.Close() // flush
	rows, err := s.ListAudit(ctx, AuditFilter{TenantID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("want 2 audit rows (append, denied append), got %+v", rows)
	}
	denied, ok := rows[0], rows[1] // newest first
	want := []grpcx.AuditRecord{
		{TenantID: "acme", KeyID: ingestID, Method: "/test.Svc/Append", Code: "OK", Peer: "203.0.113.7"},
		{TenantID: "acme", KeyID: readID, Method: "/test.Svc/Append", Code: "PermissionDenied", Peer: "127.0.0.1"},
	}
	for i, got := range []AuditEntry{ok, denied} {
		w := want[i]
		if got.TenantID != w.TenantID || got.KeyID != w.KeyID || got.Method != w.Method || got.Code != w.Code || got.Peer != w.Peer {
			t.Errorf("row %d: got %+v, want %+v", i, got.AuditRecord, w)
		}
		if got.At.Before(before.Add(-time.Second)) || got.At.After(time.Now()) {
			t.Errorf("row %d at %s, not during the test", i, got.At)
		}
	}
	if other, _ := s.ListAudit(ctx, AuditFilter{TenantID: "other"}); len(other) != 0 {
		t.Fatalf("another tenant's audit rows: %+v", other)
	}
}

// TestAuditQueueFullIsCountedNotSilent: with the database down the queue
// fills; Record then waits at most MaxBlock and counts what it drops.
func TestAuditQueueFullIsCountedNotSilent(t *testing.T) {
	s, proxy, _ := proxiedStore(t, AuthConfig{})
	logs := &syncBuffer{}
	proxy.Down()
	w := NewAuditWriter(s.pool, AuditConfig{QueueSize: 2, MaxBlock: 20 * time.Millisecond}, slog.New(slog.NewJSONHandler(logs, nil)))
	defer w.Close()
	rec := grpcx.AuditRecord{At: time.Now(), TenantID: "acme", Method: "/x/Y", Code: "OK"}
	// One record is held by the retrying writer, two fill the queue.
	deadline := time.Now().Add(5 * time.Second)
	for w.Dropped() == 0 && time.Now().Before(deadline) {
		start := time.Now()
		w.Record(rec)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Record blocked %s with a full queue", d)
		}
	}
	if w.Dropped() == 0 {
		t.Fatal("a full queue dropped nothing: Record must have blocked or lost rows silently")
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"audit queue full: audit records dropped"`) {
		t.Fatalf("drops not logged as errors:\n%s", logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
