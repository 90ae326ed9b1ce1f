package httpapi

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Spans of the HTTP edge never hold a visitor's full IP: neither the peer's
// nor one from X-Forwarded-For.
func TestSpansHoldNoVisitorIP(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	s, err := New(context.Background(), Config{GRPCAddr: "127.0.0.1:1", MaxBodyBytes: 1 << 20, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	req := httptest.NewRequest("POST", "/v1/conversations/c1/messages", strings.NewReader(`{"message":{"role":"ROLE_VISITOR","text":"hi"}}`))
	req.RemoteAddr = "81.2.69.142:5555"
	req.Header.Set("X-Forwarded-For", "203.0.113.50")
	req.Header.Set("Forwarded", "for=203.0.113.51")
	req.Header.Set("Origin", "https://shop.example")
	req.Header.Set("Authorization", "Bearer k")
	s.ServeHTTP(httptest.NewRecorder(), req)
	spans := rec.Ended()
	if len(spans) == 0 {
		t.Fatal("no spans recorded")
	}
	sawNetwork := false
	for _, sp := range spans {
		for _, a := range sp.Attributes() {
			v := a.Value.Emit()
			for _, ip := range []string{"81.2.69.142", "203.0.113.50", "203.0.113.51"} {
				if strings.Contains(v, ip) {
					t.Errorf("span %s attribute %s = %q holds the visitor IP", sp.Name(), a.Key, v)
				}
			}
			sawNetwork = sawNetwork || strings.Contains(v, "81.2.69.0")
		}
	}
	if !sawNetwork {
		t.Error("no span attribute holds the visitor's network 81.2.69.0")
	}
}
