package projector

import (
	"strings"
	"testing"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestRowsHideVisitorIP(t *testing.T) {
	env := &eventv1.Envelope{EventId: "e1", TenantId: "t", ConversationId: "c", OccurredAt: timestamppb.New(time.Unix(1_700_000_000, 0)),
		Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{BotId: "b", Visitor: &eventv1.Visitor{Token: "v", Ip: "203.0.113.9"}}}}
	var r Rows
	r.Add(env, 1, "")
	if strings.Contains(r.Events[0].PayloadJSON, "203.0.113.9") || !strings.Contains(r.Events[0].PayloadJSON, `"bot_id":"b"`) {
		t.Fatalf("payload_json: %s", r.Events[0].PayloadJSON)
	}
	if env.GetConversationStarted().GetVisitor().GetIp() == "" {
		t.Fatal("the event itself must not be modified")
	}
	if r.Events[0].Kind != "conversation_started" || len(r.Messages) != 0 {
		t.Fatalf("rows: %+v", r)
	}
}
