// Package api is lifecycle's gRPC adapter. Every call is scoped to the
// tenant of the caller's API key.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	lifecyclev1 "github.com/parley-dev/parley/proto/parley/lifecycle/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/consumer"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
	"github.com/parley-dev/parley/services/lifecycle/internal/outbox"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
	"github.com/parley-dev/parley/services/lifecycle/internal/sweeper"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Limits of the API's inputs.
const (
	// MaxIdleHours bounds EndStale's idle_hours (ten years).
	MaxIdleHours = 24 * 365 * 10
	// MaxTimeoutSeconds bounds a session timeout (one year).
	MaxTimeoutSeconds = 365 * 24 * 3600
	maxIDBytes        = 128
	maxTextBytes      = 1024
)

// Config configures a Server.
type Config struct {
	Store    *store.Store
	Bus      *eventbus.Bus
	Relay    *outbox.Relay
	Consumer *consumer.Consumer
	Sweeper  *sweeper.Sweeper
	// DefaultTimeout is PARLEY_LIFECYCLE_SESSION_TIMEOUT.
	DefaultTimeout time.Duration
	// WaitApplied bounds how long a command waits for the consumer to apply
	// the event it appended before answering with the predicted state.
	WaitApplied time.Duration
	// WaitCaughtUp bounds how long EndStale waits for the consumer to catch
	// up before answering Unavailable.
	WaitCaughtUp time.Duration
	Clock        func() time.Time
	Log          *slog.Logger
}

// Server implements lifecyclev1.LifecycleServiceServer.
type Server struct {
	lifecyclev1.UnimplementedLifecycleServiceServer
	cfg Config
}

// New returns a server.
func New(cfg Config) *Server {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.WaitApplied <= 0 {
		cfg.WaitApplied = 3 * time.Second
	}
	if cfg.WaitCaughtUp <= 0 {
		cfg.WaitCaughtUp = 10 * time.Second
	}
	return &Server{cfg: cfg}
}

// Scopes lists the API-key scope each method needs: reads need "read",
// everything else "admin".
func Scopes() map[string]string {
	return grpcx.MethodScopes(lifecyclev1.LifecycleService_ServiceDesc, grpcx.ScopeAdmin, map[string]string{
		"GetConversationState": grpcx.ScopeRead, "GetStats": grpcx.ScopeRead, "ListSessionTimeouts": grpcx.ScopeRead,
		"GetDebugMode": grpcx.ScopeIngest,
	})
}

// GetDebugMode returns one conversation's debug flag to a bot (ingest
// scope; publishable widget keys are refused: visitors do not read it).
func (s *Server) GetDebugMode(ctx context.Context, req *lifecyclev1.GetDebugModeRequest) (*lifecyclev1.DebugMode, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if p.Publishable() {
		return nil, status.Error(codes.PermissionDenied, "publishable keys cannot read a conversation's debug mode; use the bot's server key")
	}
	if err := checkConversation(req.GetConversationId()); err != nil {
		return nil, err
	}
	st, err := s.cfg.Store.Get(ctx, p.TenantID, req.GetConversationId())
	if err != nil {
		return nil, s.fail(ctx, "get debug mode", req.GetConversationId(), err)
	}
	return &lifecyclev1.DebugMode{ConversationId: st.ConversationID, DebugEnabled: st.DebugEnabled, AppliedSequence: st.AppliedSeq}, nil
}

// GetConversationState returns one conversation's state.
func (s *Server) GetConversationState(ctx context.Context, req *lifecyclev1.GetConversationStateRequest) (*lifecyclev1.ConversationState, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkConversation(req.GetConversationId()); err != nil {
		return nil, err
	}
	st, err := s.cfg.Store.Get(ctx, p.TenantID, req.GetConversationId())
	if err != nil {
		return nil, s.fail(ctx, "get state", req.GetConversationId(), err)
	}
	return ToProto(st), nil
}

// errNotActive is returned inside transactions for an ended conversation.
var errNotActive = errors.New("conversation has ended")

// EndConversation ends an active conversation as an administrator: the
// state change and its ConversationEnded and EngagementClassified are
// committed together and appended right after. ended_by is the caller's API
// key; the request's (deprecated) ended_by is only logged.
func (s *Server) EndConversation(ctx context.Context, req *lifecyclev1.EndConversationRequest) (*lifecyclev1.ConversationState, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkConversation(req.GetConversationId()); err != nil {
		return nil, err
	}
	if err := checkText("ended_by", req.GetEndedBy(), maxIDBytes); err != nil {
		return nil, err
	}
	if err := checkText("note", req.GetNote(), maxTextBytes); err != nil {
		return nil, err
	}
	endedBy := actor(p)
	now := s.cfg.Clock()
	var after machine.State
	err = s.cfg.Store.Tx(ctx, func(tx pgx.Tx) error {
		st, err := s.cfg.Store.LockOne(ctx, tx, p.TenantID, req.GetConversationId())
		if err != nil {
			return err
		}
		var out machine.Output
		var ok bool
		after, out, ok = machine.End(st, machine.EndCommand{Reason: eventv1.EndReason_END_REASON_ADMINISTRATOR, At: now, EndedBy: endedBy}, now)
		if !ok {
			after = st
			return errNotActive
		}
		rows, err := outbox.Rows(after, out, nil)
		if err != nil {
			return err
		}
		return s.cfg.Store.Save(ctx, tx, store.Change{States: []machine.State{after}, Outbox: rows})
	})
	if errors.Is(err, errNotActive) {
		return nil, grpcx.FailedPrecondition("CONVERSATION_ENDED", "conversation/"+req.GetConversationId(),
			fmt.Sprintf("conversation %q already ended at %s (%s)", req.GetConversationId(), after.EndedAt.Format(time.RFC3339), after.EndReason))
	}
	if err != nil {
		return nil, s.fail(ctx, "end conversation", req.GetConversationId(), err)
	}
	s.cfg.Log.InfoContext(ctx, "conversation ended by an administrator", "tenant_id", p.TenantID, "conversation_id", req.GetConversationId(),
		"ended_by", endedBy, "claimed_ended_by", req.GetEndedBy(), "note", req.GetNote())
	s.drain(ctx)
	return ToProto(after), nil
}

// RequestHandoff appends handoff_requested for an active conversation.
func (s *Server) RequestHandoff(ctx context.Context, req *lifecyclev1.RequestHandoffRequest) (*lifecyclev1.ConversationState, error) {
	if err := checkText("reason", req.GetReason(), maxTextBytes); err != nil {
		return nil, err
	}
	if err := checkText("queue", req.GetQueue(), maxIDBytes); err != nil {
		return nil, err
	}
	return s.command(ctx, req.GetConversationId(), req.GetRequestId(), nil, &eventv1.HandoffRequested{
		Reason: req.GetReason(), Queue: req.GetQueue(), RequestedBy: eventv1.Actor_ACTOR_SYSTEM,
	})
}

// JoinAgent appends agent_joined for an active conversation.
func (s *Server) JoinAgent(ctx context.Context, req *lifecyclev1.JoinAgentRequest) (*lifecyclev1.ConversationState, error) {
	if err := checkRequired("agent_id", req.GetAgentId(), maxIDBytes); err != nil {
		return nil, err
	}
	if err := checkText("agent_name", req.GetAgentName(), maxIDBytes); err != nil {
		return nil, err
	}
	return s.command(ctx, req.GetConversationId(), req.GetRequestId(), nil, &eventv1.AgentJoined{AgentId: req.GetAgentId(), AgentName: req.GetAgentName()})
}

// LeaveAgent appends agent_left for the agent present in an active
// conversation.
func (s *Server) LeaveAgent(ctx context.Context, req *lifecyclev1.LeaveAgentRequest) (*lifecyclev1.ConversationState, error) {
	if err := checkRequired("agent_id", req.GetAgentId(), maxIDBytes); err != nil {
		return nil, err
	}
	check := func(st machine.State) error {
		if !st.AgentPresent() || st.AgentID != req.GetAgentId() {
			return grpcx.FailedPrecondition("AGENT_NOT_PRESENT", "conversation/"+st.ConversationID,
				fmt.Sprintf("agent %q is not in conversation %q", req.GetAgentId(), st.ConversationID))
		}
		return nil
	}
	return s.command(ctx, req.GetConversationId(), req.GetRequestId(), check, &eventv1.AgentLeft{AgentId: req.GetAgentId()})
}

// command appends one client-fact event for an existing, active
// conversation and answers with the state after it: read back once the
// consumer applied it, or predicted when that takes longer than
// WaitApplied.
func (s *Server) command(ctx context.Context, conversationID, requestID string, check func(machine.State) error, payload proto.Message) (*lifecyclev1.ConversationState, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkConversation(conversationID); err != nil {
		return nil, err
	}
	if err := checkText("request_id", requestID, maxIDBytes); err != nil {
		return nil, err
	}
	st, err := s.cfg.Store.Get(ctx, p.TenantID, conversationID)
	if err != nil {
		return nil, s.fail(ctx, "load state", conversationID, err)
	}
	if st.Status != machine.StatusActive {
		return nil, grpcx.FailedPrecondition("CONVERSATION_ENDED", "conversation/"+conversationID,
			fmt.Sprintf("conversation %q ended at %s (%s)", conversationID, st.EndedAt.Format(time.RFC3339), st.EndReason))
	}
	if check != nil {
		if err := check(st); err != nil {
			return nil, err
		}
	}
	now := s.cfg.Clock()
	opts := []eventbus.EnvelopeOption{eventbus.OccurredAt(now), eventbus.RecordedAt(now), eventbus.Producer(machine.Producer)}
	if requestID != "" {
		opts = append(opts, eventbus.WithEventID(eventbus.ClientEventID(p.TenantID, conversationID, requestID)))
	}
	env := eventbus.NewEnvelope(p.TenantID, conversationID, payload, opts...)
	ack, err := s.cfg.Bus.Publish(ctx, env)
	if err != nil {
		s.cfg.Log.WarnContext(ctx, "append failed", "kind", env.Kind, "err", err)
		return nil, grpcx.Unavailable("event log unavailable; retry (with the same request_id)")
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.WaitApplied)
	defer cancel()
	if s.cfg.Consumer.WaitApplied(wctx, p.TenantID, conversationID, ack.Sequence) {
		if got, err := s.cfg.Store.Get(ctx, p.TenantID, conversationID); err == nil {
			return ToProto(got), nil
		}
	}
	predicted, _ := machine.Apply(st, machine.Event{Envelope: env}, now)
	return ToProto(predicted), nil
}

// EndStale ends the tenant's conversations idle for longer than idle_hours.
func (s *Server) EndStale(ctx context.Context, req *lifecyclev1.EndStaleRequest) (*lifecyclev1.EndStaleResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetIdleHours() == 0 || req.GetIdleHours() > MaxIdleHours {
		return nil, grpcx.Invalid("idle_hours", fmt.Sprintf("must be between 1 and %d", MaxIdleHours))
	}
	if err := s.waitCaughtUp(ctx); err != nil {
		return nil, err
	}
	n, err := s.cfg.Sweeper.EndIdle(ctx, p.TenantID, time.Duration(req.GetIdleHours())*time.Hour)
	if err != nil {
		return nil, s.fail(ctx, "end stale", "", err)
	}
	s.cfg.Log.InfoContext(ctx, "ended idle conversations", "tenant_id", p.TenantID, "idle_hours", req.GetIdleHours(), "ended", n,
		"ended_by", actor(p))
	return &lifecyclev1.EndStaleResponse{Ended: uint64(n)}, nil
}

// waitCaughtUp waits until the consumer applied the whole log, so that no
// conversation is ended on activity that is appended but not yet applied.
func (s *Server) waitCaughtUp(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.WaitCaughtUp)
	for {
		ok, err := s.cfg.Consumer.CaughtUp(ctx)
		if err != nil {
			s.cfg.Log.WarnContext(ctx, "cannot read the consumer's position", "err", err)
			return grpcx.Unavailable("event log unavailable; retry later")
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return grpcx.Unavailable("lifecycle is still applying the event log; retry shortly")
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return status.FromContextError(ctx.Err()).Err()
		case <-t.C:
		}
	}
}

// GetStats summarises the tenant's conversations.
func (s *Server) GetStats(ctx context.Context, _ *lifecyclev1.GetStatsRequest) (*lifecyclev1.Stats, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.cfg.Store.Stats(ctx, p.TenantID)
	if err != nil {
		return nil, s.fail(ctx, "stats", "", err)
	}
	return &lifecyclev1.Stats{
		Active: st.Active, Ended: st.Ended, EndedByReason: st.EndedByReason, ActiveByChannel: st.ActiveByChannel,
		OldestActiveAt: ts(st.OldestActiveAt), LongestIdleSince: ts(st.LongestIdleSince), WaitingForAgent: st.WaitingForAgent,
	}, nil
}

// SetSessionTimeout sets or removes one of the tenant's session timeouts
// and reschedules the active conversations it affects.
func (s *Server) SetSessionTimeout(ctx context.Context, req *lifecyclev1.SetSessionTimeoutRequest) (*lifecyclev1.SessionTimeout, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if _, known := eventv1.Channel_name[int32(req.GetChannel())]; !known {
		return nil, grpcx.Invalid("channel", "unknown channel")
	}
	if req.GetTimeoutSeconds() > MaxTimeoutSeconds {
		return nil, grpcx.Invalid("timeout_seconds", fmt.Sprintf("at most %d (one year); 0 removes the setting", MaxTimeoutSeconds))
	}
	channel := store.AllChannels
	if req.GetChannel() != eventv1.Channel_CHANNEL_UNSPECIFIED {
		channel = req.GetChannel().String()
	}
	if err := s.cfg.Store.SetTimeout(ctx, p.TenantID, channel, time.Duration(req.GetTimeoutSeconds())*time.Second); err != nil {
		return nil, s.fail(ctx, "set session timeout", "", err)
	}
	s.cfg.Log.InfoContext(ctx, "session timeout set", "tenant_id", p.TenantID, "channel", channel, "timeout_seconds", req.GetTimeoutSeconds(),
		"set_by", actor(p))
	return &lifecyclev1.SessionTimeout{Channel: req.GetChannel(), TimeoutSeconds: req.GetTimeoutSeconds()}, nil
}

// ListSessionTimeouts lists the tenant's session timeouts and the defaults.
func (s *Server) ListSessionTimeouts(ctx context.Context, _ *lifecyclev1.ListSessionTimeoutsRequest) (*lifecyclev1.ListSessionTimeoutsResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	own, err := s.cfg.Store.Timeouts(ctx, p.TenantID)
	if err != nil {
		return nil, s.fail(ctx, "list session timeouts", "", err)
	}
	defs, err := s.cfg.Store.Timeouts(ctx, store.ServiceTenant)
	if err != nil {
		return nil, s.fail(ctx, "list session timeouts", "", err)
	}
	return &lifecyclev1.ListSessionTimeoutsResponse{
		Timeouts: timeoutsProto(own), ChannelDefaults: timeoutsProto(defs), DefaultTimeoutSeconds: uint32(s.cfg.DefaultTimeout / time.Second),
	}, nil
}

func timeoutsProto(ts []store.Timeout) []*lifecyclev1.SessionTimeout {
	out := make([]*lifecyclev1.SessionTimeout, 0, len(ts))
	for _, t := range ts {
		ch := eventv1.Channel_CHANNEL_UNSPECIFIED
		if t.Channel != store.AllChannels {
			ch = eventv1.Channel(eventv1.Channel_value[t.Channel])
		}
		out = append(out, &lifecyclev1.SessionTimeout{Channel: ch, TimeoutSeconds: uint32(t.Timeout / time.Second)})
	}
	return out
}

// drain publishes what the last transaction put in the outbox; a failure
// is left to the relay's retry loop (the change is committed).
func (s *Server) drain(ctx context.Context) {
	if err := s.cfg.Relay.Drain(ctx); err != nil {
		s.cfg.Log.WarnContext(ctx, "derived events not published yet; the outbox will retry", "err", err)
		s.cfg.Relay.Kick()
	}
}

func (s *Server) fail(ctx context.Context, op, conversationID string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return grpcx.NotFound("conversation %q not found", conversationID)
	}
	if grpcx.IsSafe(err) {
		return err
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	s.cfg.Log.ErrorContext(ctx, op+" failed", "conversation_id", conversationID, "err", err)
	return grpcx.Unavailable("lifecycle state store unavailable; retry later")
}

// ToProto converts a state to its API form.
func ToProto(st machine.State) *lifecyclev1.ConversationState {
	out := &lifecyclev1.ConversationState{
		ConversationId: st.ConversationID, EndReason: st.EndReason, Channel: st.Channel, BotId: st.BotID, Type: st.Type,
		StartedAt: ts(st.StartedAt), LastActivityAt: ts(st.LastActivityAt), EndedAt: ts(st.EndedAt), EndedBy: st.EndedBy,
		HandoffRequested: !st.HandoffRequestedAt.IsZero(), HandoffRequestedAt: ts(st.HandoffRequestedAt), WaitingForAgent: st.AwaitingAgent,
		Takeover: !st.TakeoverAt.IsZero(), TakeoverAt: ts(st.TakeoverAt), AgentId: st.AgentID, AgentName: st.AgentName,
		AgentJoinedAt: ts(st.AgentJoinedAt), AgentLeftAt: ts(st.AgentLeftAt), OperatorNoResponse: st.OperatorNoResponse,
		AvgResponseMs: st.AvgResponseMS(), AgentReplies: st.AgentReplies, VisitorMessages: st.VisitorMessages,
		GoalsReached: st.GoalsReached, FlowsCompleted: st.FlowsCompleted, LateEvents: st.LateEvents,
		AppliedSequence: st.AppliedSeq, DebugEnabled: st.DebugEnabled,
	}
	switch st.Status {
	case machine.StatusActive:
		out.Status = lifecyclev1.Status_STATUS_ACTIVE
	case machine.StatusEnded:
		out.Status = lifecyclev1.Status_STATUS_ENDED
		out.Engagement, out.Resolved = st.Engagement, st.Resolved
	}
	if st.HasFirstResponse {
		v := st.FirstResponseMS
		out.FirstResponseMs = &v
	}
	return out
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func checkConversation(id string) error {
	if !eventbus.ValidConversationID(id) {
		return grpcx.Invalid("conversation_id", "required; 1-128 characters of A-Z a-z 0-9 _ -")
	}
	return nil
}

func checkRequired(field, v string, maxBytes int) error {
	if strings.TrimSpace(v) == "" {
		return grpcx.Invalid(field, "required")
	}
	return checkText(field, v, maxBytes)
}

func checkText(field, v string, maxBytes int) error {
	if len(v) > maxBytes || !utf8.ValidString(v) {
		return grpcx.Invalid(field, fmt.Sprintf("at most %d bytes of UTF-8", maxBytes))
	}
	return nil
}

// actor names the caller's API key as the one who did something.
func actor(p grpcx.Principal) string { return "api-key:" + p.KeyID }
