package grpcx_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/parley-dev/parley/libs/grpcx"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type memSink struct {
	mu   sync.Mutex
	recs []grpcx.AuditRecord
}

func (m *memSink) Record(r grpcx.AuditRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
}

func TestAuditedMethods(t *testing.T) {
	scopes := map[string]string{
		"/s/Append": grpcx.ScopeIngest, "/s/List": grpcx.ScopeRead, "/s/Shared": grpcx.Optional(grpcx.ScopeRead),
		"/s/CreateRule": grpcx.ScopeRules, "/s/Rebuild": grpcx.ScopeOperator, "/s/Export": grpcx.ScopeRead, "/s/Ping": grpcx.ScopeIngest,
	}
	overrides := map[string]bool{"/s/Export": true, "/s/Ping": false}
	var got []string
	for _, m := range []string{"/s/Append", "/s/List", "/s/Shared", "/s/CreateRule", "/s/Rebuild", "/s/Export", "/s/Ping", "/s/Undeclared", "/grpc.health.v1.Health/Check"} {
		if grpcx.Audited(m, scopes, overrides) {
			got = append(got, m)
		}
	}
	want := []string{"/s/Append", "/s/CreateRule", "/s/Rebuild", "/s/Export", "/s/Undeclared"}
	if !slices.Equal(got, want) {
		t.Fatalf("audited %v, want %v", got, want)
	}
}

// TestAuditRecordsPanics: a mutating call whose handler panics is recorded
// as Internal, and the client gets Internal.
func TestAuditRecordsPanics(t *testing.T) {
	sink := &memSink{}
	auth := fakeAuth{"k": {TenantID: "acme", KeyID: "k1", Scopes: []string{grpcx.ScopeAdmin}}}
	conn, _ := serve(t, grpcx.ServerConfig{Auth: auth, Audit: sink, Scopes: map[string]string{"/test.Svc/Boom": grpcx.ScopeIngest}},
		map[string]handlerFunc{"Boom": func(context.Context) error { panic("boom") }})
	if c := status.Code(invoke(conn, "Boom", "k")); c != codes.Internal {
		t.Fatalf("panicking handler: %s", c)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.recs) != 1 || sink.recs[0].Code != "Internal" || sink.recs[0].KeyID != "k1" || sink.recs[0].Method != "/test.Svc/Boom" {
		t.Fatalf("audit records %+v", sink.recs)
	}
}
