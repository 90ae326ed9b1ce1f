package ingest_test

import (
	"context"
	"testing"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest"
	"google.golang.org/grpc/metadata"
)

// The visitor's IP comes from trusted proxy hops only, from gRPC metadata
// only when the edge signed it or the key may set it, and is stored
// truncated to its network.
func TestVisitorIP(t *testing.T) {
	var relayKey string
	f := start(t, func(c *ingest.Config) {
		c.TrustedProxies = []string{"127.0.0.1/32"}
		ctx := context.Background()
		pool, err := pgstore.Connect(ctx, config.Postgres{URL: c.Postgres.URL, MaxConns: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		key, keyID, err := tenancy.NewStore(pool).CreateAPIKey(ctx, "acme", "relay", []string{grpcx.ScopeIngest})
		if err != nil {
			t.Fatal(err)
		}
		relayKey, c.ClientIPKeys = key, []string{keyID}
	})
	startIP := func(ctx context.Context, conv string) string {
		t.Helper()
		res, err := f.client.StartConversation(ctx, &ingestv1.StartConversationRequest{ConversationId: conv, Conversation: &eventv1.ConversationStarted{}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range f.stored(t) {
			if e.EventId == res.EventId {
				return e.GetConversationStarted().GetVisitor().GetIp()
			}
		}
		t.Fatalf("%s not stored", conv)
		return ""
	}
	// HTTP behind a trusted proxy (the test's loopback peer): the right-most
	// untrusted hop is the visitor; what the client wrote left of it is not.
	resp, body := httpDo(t, "POST", f.httpURL+"/v1/conversations/h-1:start", f.key, []byte(`{"conversation":{}}`),
		map[string]string{"Origin": "https://shop.example", "X-Forwarded-For": "6.6.6.6, 81.2.69.142"})
	if resp.StatusCode != 200 {
		t.Fatalf("start: %d %s", resp.StatusCode, body)
	}
	if got := f.stored(t)[0].GetConversationStarted().GetVisitor().GetIp(); got != "81.2.69.0" {
		t.Fatalf("HTTP visitor ip stored as %q, want 81.2.69.0", got)
	}
	// gRPC callers setting the metadata themselves are ignored, forged
	// signature or not.
	md := func(key string, kv ...string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), append([]string{"authorization", "Bearer " + key, "parley-client-ip", "81.2.69.142"}, kv...)...)
	}
	if got := startIP(md(f.key), "g-1"); got != "" {
		t.Fatalf("metadata of an ordinary server key used: %q", got)
	}
	if got := startIP(md(f.key, "parley-client-sig", "forged"), "g-2"); got != "" {
		t.Fatalf("metadata with a forged signature used: %q", got)
	}
	// A key allowed to relay visitor metadata sets it.
	if got := startIP(md(relayKey), "g-3"); got != "81.2.69.0" {
		t.Fatalf("relay key's metadata stored as %q, want 81.2.69.0", got)
	}
}
