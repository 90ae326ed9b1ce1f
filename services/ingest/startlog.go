package ingest

import (
	"context"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// startLog finds a conversation's events in PARLEY_CONV ("last message on
// subject", like closeLog).
type startLog struct{ bus *eventbus.Bus }

// LastStart implements api.StartLog.
func (l startLog) LastStart(ctx context.Context, tenantID, conversationID string) (bool, *eventv1.Envelope, error) {
	// Any kind: the subject's last token is the kind.
	if _, found, err := l.bus.LastOnSubject(ctx, eventbus.ConvSubject(tenantID, conversationID, "*")); err != nil || !found {
		return false, nil, err
	}
	m, found, err := l.bus.LastOnSubject(ctx, eventbus.ConvSubject(tenantID, conversationID, "conversation_started"))
	if err != nil || !found {
		return true, nil, err
	}
	env, err := m.Envelope()
	if err != nil {
		return true, nil, err
	}
	return true, env, nil
}
