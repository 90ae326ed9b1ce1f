package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/libs/testsvc"
)

// recordingBody is a request body that remembers whether it was read.
type recordingBody struct {
	r    io.Reader
	read bool
}

func (b *recordingBody) Read(p []byte) (int, error) { b.read = true; return b.r.Read(p) }
func (b *recordingBody) Close() error               { return nil }

func newEdge(t *testing.T) (*Server, string) {
	t.Helper()
	ctx := context.Background()
	pgURL := testenv.Postgres(t)
	key := testsvc.Tenants(t, pgURL, []string{grpcx.ScopeIngest}, "acme")["acme"]
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// No gRPC server listens: a request that reached Append would fail.
	s, err := New(ctx, Config{GRPCAddr: "127.0.0.1:1", MaxBodyBytes: 8 << 20, Auth: tenancy.NewStore(pool)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, key
}

func TestRasaAuthenticatesBeforeReadingTheBody(t *testing.T) {
	s, key := newEdge(t)
	// 3.5 MB of events that are all skipped.
	var raw bytes.Buffer
	raw.WriteString("[")
	for i := 0; raw.Len() < 3_500_000; i++ {
		if i > 0 {
			raw.WriteString(",")
		}
		raw.WriteString(`{"event":"user_featurization","sender_id":"s1","timestamp":1767612345.5}`)
	}
	raw.WriteString("]")
	for _, c := range []struct{ name, auth string }{{"no key", ""}, {"bad key", "Bearer pk_0123456789abcdef_" + strings.Repeat("0", 64)}} {
		body := &recordingBody{r: bytes.NewReader(raw.Bytes())}
		req := httptest.NewRequest("POST", "/v1/rasa/events", nil)
		req.Body = body
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != http.StatusUnauthorized || body.read {
			t.Fatalf("%s: status %d, body read %v", c.name, w.Code, body.read)
		}
	}
	// With a key, a skip-only body gets a bounded reply.
	req := httptest.NewRequest("POST", "/v1/rasa/events", bytes.NewReader(raw.Bytes()))
	req.Header.Set("Authorization", "Bearer "+key)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusOK || w.Body.Len() > 8<<10 {
		t.Fatalf("skip-only body: status %d, reply of %d bytes", w.Code, w.Body.Len())
	}
	var out rasaResponse
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	wantTotal := strings.Count(raw.String(), `"event"`)
	if len(out.Skipped) != MaxRasaSkipsListed || out.SkippedTotal != wantTotal || len(out.Results) != 0 {
		t.Fatalf("reply lists %d skips of %d (want %d of %d)", len(out.Skipped), out.SkippedTotal, MaxRasaSkipsListed, wantTotal)
	}
}
