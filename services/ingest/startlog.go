package ingest

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
)

// startLog finds a conversation's events in PARLEY_CONV ("last message on
// subject", like closeLog).
type startLog struct{ bus *eventbus.Bus }

// LastStart implements api.StartLog.
func (l startLog) LastStart(ctx context.Context, tenantID, conversationID string) (bool, *eventv1.Envelope, error) {
	st, err := l.bus.JetStream().Stream(ctx, eventbus.ConvStream)
	if err != nil {
		return false, nil, err
	}
	// Any kind: the subject's last token is the kind.
	if _, err := st.GetLastMsgForSubject(ctx, eventbus.ConvSubject(tenantID, conversationID, "*")); errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil, nil
	} else if err != nil {
		return false, nil, err
	}
	m, err := st.GetLastMsgForSubject(ctx, eventbus.ConvSubject(tenantID, conversationID, "conversation_started"))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil, nil
	}
	if err != nil {
		return true, nil, err
	}
	env := &eventv1.Envelope{}
	if err := proto.Unmarshal(m.Data, env); err != nil {
		return true, nil, err
	}
	return true, env, nil
}
