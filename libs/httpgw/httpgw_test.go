package httpgw

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestTemplate(t *testing.T) {
	routes := []string{"/v1/conversations:search", "/v1/conversations/{conversation_id}", "/v1/shared/{share_token}", "/v1/share-links/{link_id}:revoke"}
	for path, want := range map[string]string{
		"/v1/conversations:search":          "/v1/conversations:search",
		"/v1/conversations/acme-1":          "/v1/conversations/{conversation_id}",
		"/v1/shared/c2VjcmV0.c2ln":          "/v1/shared/{share_token}",
		"/v1/share-links/ab12:revoke":       "/v1/share-links/{link_id}:revoke",
		"/v1/share-links/ab12":              "/{unmatched}",
		"/v1/shared/c2VjcmV0.c2ln/extra":    "/{unmatched}",
		"/v1/share-links/:revoke":           "/{unmatched}",
		"/somewhere/else?token=c2VjcmV0":    "/{unmatched}",
		"/v1/conversations/acme-1/messages": "/{unmatched}",
	} {
		if got := Template(routes, path); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
}

// With routes, spans show the template (name and url.path) and the handler
// still sees the real path.
func TestSpansUseTemplates(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	g := &Gateway{Mux: http.NewServeMux(), cfg: Config{Name: "test-http", Routes: []string{"/v1/shared/{share_token}"}, TracerProvider: tp}}
	var seen string
	g.Mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) { seen = r.URL.Path + "?" + r.URL.RawQuery })
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/shared/secret-token?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if seen != "/v1/shared/secret-token?x=1" {
		t.Fatalf("handler saw %q", seen)
	}
	spans := rec.Ended()
	if len(spans) != 1 || spans[0].Name() != "GET /v1/shared/{share_token}" {
		t.Fatalf("spans: %v", spans)
	}
	for _, a := range spans[0].Attributes() {
		if strings.Contains(a.Value.Emit(), "secret-token") {
			t.Fatalf("attribute %s = %s", a.Key, a.Value.Emit())
		}
	}
}
