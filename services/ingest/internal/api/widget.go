package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"github.com/parley-dev/parley/libs/grpcx"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metadata a widget sends with a publishable key: the page's origin (the HTTP
// edge sets it from the Origin header) and the token StartConversation
// returned for the conversation (HTTP: the Parley-Conversation-Token header).
const (
	MDOrigin            = "origin"
	MDConversationToken = "parley-conversation-token"
)

// Tokens issues and checks per-conversation tokens: HMAC-SHA256 over
// tenant, conversation and key id with a server secret. A zero Tokens (no
// secret) issues none, and publishable keys are then refused.
type Tokens struct{ secret []byte }

// NewTokens returns Tokens keyed by secret.
func NewTokens(secret string) Tokens { return Tokens{secret: []byte(secret)} }

// Enabled reports whether a secret is configured.
func (t Tokens) Enabled() bool { return len(t.secret) > 0 }

// Issue returns the token of a conversation started with keyID.
func (t Tokens) Issue(tenant, conversation, keyID string) string {
	m := hmac.New(sha256.New, t.secret)
	m.Write([]byte("parley-conversation-token/v1\x00" + tenant + "\x00" + conversation + "\x00" + keyID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Verify checks a token in constant time.
func (t Tokens) Verify(tenant, conversation, keyID, token string) bool {
	if !t.Enabled() || token == "" {
		return false
	}
	return hmac.Equal([]byte(t.Issue(tenant, conversation, keyID)), []byte(token))
}

// StartLog tells whether a conversation already has events in the log, and
// returns its last stored conversation_started (nil when none).
type StartLog interface {
	LastStart(ctx context.Context, tenantID, conversationID string) (hasEvents bool, start *eventv1.Envelope, err error)
}

// denied is PermissionDenied naming the field (errdetails.BadRequest).
func denied(field, desc string) error {
	st := status.New(codes.PermissionDenied, field+": "+desc)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}}); err == nil {
		st = d
	}
	return st.Err()
}

// checkOrigin refuses a publishable key used from a page it is not bound to.
func checkOrigin(ctx context.Context, p grpcx.Principal) error {
	md, _ := metadata.FromIncomingContext(ctx)
	var origin string
	if v := md.Get(MDOrigin); len(v) > 0 {
		origin = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(v[0])), "/")
	}
	if origin == "" || !slices.ContainsFunc(p.AllowedOrigins, func(o string) bool {
		return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(o)), "/") == origin
	}) {
		return status.Errorf(codes.PermissionDenied, "origin %q is not allowed for this publishable key", shortOrigin(origin))
	}
	return nil
}

func shortOrigin(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// widgetKind checks that a publishable key may send env: only what the
// visitor's own browser knows (docs/events.md, "Publishable keys").
func widgetKind(i int, env *eventv1.Envelope) error {
	at := func(f string) string { return fmt.Sprintf("events[%d].%s", i, f) }
	switch p := env.Payload.(type) {
	case *eventv1.Envelope_ConversationStarted:
		// Ingest derives these from what it sees of the browser.
		if p.ConversationStarted.GetVisitor().GetIp() != "" {
			return denied(at("conversation_started.visitor.ip"), "set by ingest from the request for publishable keys")
		}
		if p.ConversationStarted.Location != nil {
			return denied(at("conversation_started.location"), "set by ingest from the request for publishable keys")
		}
		if p.ConversationStarted.GetDebugEnabled() {
			return denied(at("conversation_started.debug_enabled"), "the bot runtime's switch: not for publishable keys")
		}
		return nil
	case *eventv1.Envelope_PageViewed:
		return nil
	case *eventv1.Envelope_MessagePosted:
		m := p.MessagePosted
		if m.Role != eventv1.Role_ROLE_VISITOR {
			return denied(at("message_posted.role"), "publishable keys may post visitor messages only")
		}
		for _, f := range []struct {
			name string
			set  bool
		}{{"intent", m.Intent != nil}, {"unidentified", m.Unidentified}, {"flow_id", m.FlowId != ""}, {"node_id", m.NodeId != ""},
			{"response_time_ms", m.ResponseTimeMs != 0}, {"agent_id", m.AgentId != ""}, {"paid", m.Paid}} {
			if f.set {
				return denied(at("message_posted."+f.name), "set by the bot runtime, not by publishable keys")
			}
		}
		return nil
	case *eventv1.Envelope_ConversationClosed:
		if p.ConversationClosed.ClosedBy != eventv1.Actor_ACTOR_VISITOR {
			return denied(at("conversation_closed.closed_by"), "publishable keys may close as ACTOR_VISITOR only")
		}
		return nil
	case *eventv1.Envelope_VariablesCaptured:
		if p.VariablesCaptured.Source != eventv1.VariableSource_VARIABLE_SOURCE_PRE_CHAT_FORM {
			return denied(at("variables_captured.source"), "publishable keys may send VARIABLE_SOURCE_PRE_CHAT_FORM only")
		}
		return nil
	}
	return denied(at("payload"), "publishable keys may not send this kind of event; use a server key")
}

// authorizeWidget applies a publishable key's limits to a validated batch:
// origin, kinds, and conversations it started (a start of a new conversation
// in the batch, or the conversation's token). It returns the conversations
// started by the batch, whose results carry a token.
func (s *Server) authorizeWidget(ctx context.Context, p grpcx.Principal, events []*eventv1.Envelope) (map[string]bool, error) {
	if err := checkOrigin(ctx, p); err != nil {
		return nil, err
	}
	if !s.d.Tokens.Enabled() {
		return nil, grpcx.FailedPrecondition("WIDGET_KEYS_DISABLED", "PARLEY_INGEST_TOKEN_SECRET",
			"publishable keys are disabled on this server (no conversation token secret is configured)")
	}
	for i, env := range events {
		if err := widgetKind(i, env); err != nil {
			return nil, err
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	tokens := md.Get(MDConversationToken)
	started := map[string]bool{}
	for i, env := range events {
		if cs := env.GetConversationStarted(); cs != nil && !started[env.ConversationId] {
			if err := s.newConversation(ctx, p, i, env); err != nil {
				return nil, err
			}
			started[env.ConversationId] = true
		}
	}
	checked := map[string]bool{}
	for i, env := range events {
		c := env.ConversationId
		if started[c] || checked[c] {
			continue
		}
		if !slices.ContainsFunc(tokens, func(t string) bool { return s.d.Tokens.Verify(p.TenantID, c, p.KeyID, t) }) {
			return nil, denied(fmt.Sprintf("events[%d].conversation_id", i),
				"publishable keys need the conversation's token (metadata parley-conversation-token, returned when the conversation was started)")
		}
		checked[c] = true
	}
	return started, nil
}

// newConversation refuses a widget's start of a conversation that already has
// events, except an exact resend of the start that opened it (same event id
// and visitor token).
func (s *Server) newConversation(ctx context.Context, p grpcx.Principal, i int, env *eventv1.Envelope) error {
	if s.d.Starts == nil {
		return grpcx.FailedPrecondition("WIDGET_KEYS_DISABLED", "events", "publishable keys are disabled on this server")
	}
	has, prev, err := s.d.Starts.LastStart(ctx, p.TenantID, env.ConversationId)
	if err != nil {
		s.d.Log.ErrorContext(ctx, "looking up a conversation in the event log", "err", err)
		return grpcx.Unavailable("event log unavailable; nothing from this request was stored")
	}
	if !has {
		return nil
	}
	if prev != nil && prev.EventId == env.EventId &&
		prev.GetConversationStarted().GetVisitor().GetToken() == env.GetConversationStarted().GetVisitor().GetToken() {
		return nil
	}
	return denied(fmt.Sprintf("events[%d].conversation_id", i), "the conversation already exists; publishable keys may start new conversations only")
}
