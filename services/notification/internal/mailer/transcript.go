package mailer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/notification/internal/mail"
)

// readWait bounds one fetch of a transcript's events.
const readWait = 2 * time.Second

// errDone stops a fetch once the transcript is full.
var errDone = errors.New("transcript full")

// ReadTranscript reads one conversation's events from the event log in
// order (subjects parley.conv.v1.<tenant>.<conversation>.>) and folds them
// into a transcript: the conversation's start, channel and visitor, and at
// most maxMessages messages (the first ones) with their authors (agents by
// the name they joined with). A conversation without events is a
// permanent error; a log outage a transient one.
func ReadTranscript(ctx context.Context, bus *eventbus.Bus, tenant, conversation string, maxMessages int) (mail.Conversation, []mail.TranscriptMessage, error) {
	conv := mail.Conversation{TenantID: tenant, ID: conversation}
	r, err := bus.Read(ctx, eventbus.ReadOptions{Filter: []string{eventbus.ConvSubject(tenant, conversation, ">")}})
	if err != nil {
		return conv, nil, err
	}
	left, err := r.Pending(ctx)
	if err != nil {
		return conv, nil, err
	}
	if left == 0 {
		return conv, nil, mail.PermanentError(fmt.Errorf("conversation %s has no events", conversation))
	}
	var msgs []mail.TranscriptMessage
	agents := map[string]string{}
	fold := func(lm eventbus.LogMsg) error {
		left = lm.Pending
		d, err := bus.Decode(lm)
		if err != nil {
			return nil // a bad event is the consumers' concern; skip it here
		}
		env := d.Envelope
		switch {
		case env.GetConversationStarted() != nil:
			s := env.GetConversationStarted()
			conv.StartedAt = env.GetOccurredAt().AsTime()
			conv.VisitorName = s.GetVisitor().GetDisplayName()
			if s.GetChannel() != eventv1.Channel_CHANNEL_UNSPECIFIED {
				conv.Channel = strings.ToLower(strings.TrimPrefix(s.GetChannel().String(), "CHANNEL_"))
			}
		case env.GetAgentJoined() != nil:
			a := env.GetAgentJoined()
			if a.GetAgentName() != "" {
				agents[a.GetAgentId()] = a.GetAgentName()
			}
		case env.GetMessagePosted() != nil:
			p := env.GetMessagePosted()
			m := mail.TranscriptMessage{At: env.GetOccurredAt().AsTime(), Text: p.GetText()}
			switch p.GetRole() {
			case eventv1.Role_ROLE_VISITOR:
				m.Role = mail.RoleVisitor
			case eventv1.Role_ROLE_BOT:
				m.Role = mail.RoleBot
			case eventv1.Role_ROLE_AGENT:
				m.Role, m.AgentName = mail.RoleAgent, agents[p.GetAgentId()]
			default:
				return nil // system messages stay out of transcripts
			}
			msgs = append(msgs, m)
			if len(msgs) >= maxMessages {
				return errDone
			}
		}
		return nil
	}
	for left > 0 {
		if err := ctx.Err(); err != nil {
			return conv, nil, err
		}
		// Ask for no more than is pending: a fetch waits for all it asks.
		n, err := r.Fetch(int(min(left, 256)), readWait, fold)
		if errors.Is(err, errDone) {
			break
		}
		if err != nil {
			return conv, nil, err
		}
		if n == 0 {
			return conv, nil, fmt.Errorf("%w: conversation %s: %d events not read", eventbus.ErrUnavailable, conversation, left)
		}
	}
	return conv, msgs, nil
}
