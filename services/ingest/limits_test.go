package ingest_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Every field is bounded and storable: over gRPC and HTTP the violation names
// the field path, and nothing is stored.
func TestUnboundedFieldsAreRefused(t *testing.T) {
	f := start(t, func(c *ingest.Config) { c.MaxRequestBytes = 4 << 20 })
	vars := map[string]string{}
	for i := range 10000 {
		vars[fmt.Sprintf("v%d", i)] = "x"
	}
	startWith := func(cs *eventv1.ConversationStarted) *ingestv1.AppendRequest {
		return &ingestv1.AppendRequest{Events: []*eventv1.Envelope{visitor("ok", "fine"), visitor("ok", "fine"),
			{ConversationId: "c", Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: cs}}}}
	}
	_, err := f.client.Append(f.ctx(), startWith(&eventv1.ConversationStarted{BotId: strings.Repeat("b", 1_500_000)}))
	assertField(t, err, "events[2].conversation_started.bot_id")
	_, err = f.client.Append(f.ctx(), startWith(&eventv1.ConversationStarted{Variables: vars}))
	assertField(t, err, "events[2].conversation_started.variables")
	_, err = f.client.Append(f.ctx(), startWith(&eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Token: "a\x00b"}}))
	assertField(t, err, "events[2].conversation_started.visitor.token")
	// U+0000 sent as JSON over HTTP.
	resp, body := httpDo(t, "POST", f.httpURL+"/v1/conversations/web-1/messages", f.key, []byte(`{"message":{"role":"ROLE_VISITOR","text":"nul \u0000 here"}}`), nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "events[0].message_posted.text") {
		t.Fatalf("NUL over HTTP: %d %s", resp.StatusCode, body)
	}
	if got := f.streamMsgs(t); got != 0 {
		t.Fatalf("refused requests stored %d events", got)
	}
}

// A request size limit above the NATS server's max_payload (8 MiB in tests)
// is lowered to it.
func TestRequestLimitFollowsNATSMaxPayload(t *testing.T) {
	f := start(t, func(c *ingest.Config) { c.MaxRequestBytes = 32 << 20 })
	e := visitor("c1", "x")
	e.ClientEventId = strings.Repeat("y", 9<<20)
	_, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{e}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("9 MiB request with max_payload 8 MiB: want ResourceExhausted, got %v", err)
	}
}

// One AppendStream call carries a bounded number of events and requests;
// what came before the limit stays stored.
func TestAppendStreamIsBounded(t *testing.T) {
	f := start(t, func(c *ingest.Config) { c.MaxStreamEvents, c.MaxStreamRequests = 15, 3 })
	send := func(batches ...int) error {
		st, err := f.client.AppendStream(f.ctx())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range batches {
			var evs []*eventv1.Envelope
			for range n {
				evs = append(evs, visitor("s1", "x"))
			}
			if err := st.Send(&ingestv1.AppendStreamRequest{Events: evs}); err != nil {
				break // the server ended the call; CloseAndRecv has its status
			}
		}
		_, err = st.CloseAndRecv()
		return err
	}
	if err := send(10, 5); err != nil {
		t.Fatalf("15 events in 2 requests: %v", err)
	}
	if err := send(10, 10); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("20 events: want ResourceExhausted, got %v", err)
	}
	if err := send(1, 1, 1, 1); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("4 requests: want ResourceExhausted, got %v", err)
	}
	if got, want := f.streamMsgs(t), uint64(15+10+3); got != want {
		t.Fatalf("stream holds %d, want %d", got, want)
	}
}
