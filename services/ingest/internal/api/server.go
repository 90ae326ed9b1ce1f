// Package api is ingest's gRPC adapter: it authenticates the caller's tenant,
// validates the batch as a whole, completes envelopes and appends them.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/telemetry"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest/internal/enrich"
	"github.com/parley-dev/parley/services/ingest/internal/mask"
	"github.com/parley-dev/parley/services/ingest/internal/validate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Committer stores a request's envelopes in the event log and returns one
// acknowledgement per envelope, in order, once all are stored.
type Committer interface {
	Append(ctx context.Context, envs []*eventv1.Envelope) ([]eventbus.PubAck, error)
}

// EndedView tells whether lifecycle has ended a conversation (the fast view
// in libs/convview).
type EndedView interface {
	Ended(tenantID, conversationID string) (convview.Ended, bool)
}

// Deps are what the server needs.
type Deps struct {
	Committer Committer
	// Ended may be nil (no ended-conversation check).
	Ended EndedView
	// Closes finds the close stored for a conversation, so that a resent
	// request whose close ended the conversation is answered like any
	// resend (duplicates) rather than refused (nil: always refused).
	Closes CloseLog
	// DuplicateWindow is the event log's duplicate window: a resend is
	// recognised only within it.
	DuplicateWindow time.Duration
	// Enricher completes ConversationStarted from the request (nil: none).
	Enricher *enrich.Enricher
	// Masking holds tenants' masking rules, applied to every event before
	// it is stored (nil: none).
	Masking *mask.Cache
	// Starts finds a conversation's events in the log, for publishable keys'
	// starts (nil: publishable keys are refused).
	Starts StartLog
	// Tokens issues and checks the per-conversation tokens of publishable
	// keys (zero: publishable keys are refused).
	Tokens Tokens
	// Edge verifies the visitor metadata of the in-process HTTP edge.
	Edge EdgeSigner
	// ClientIPKeys are the key ids whose callers may set the visitor
	// metadata (parley-client-ip, parley-client-user-agent) themselves.
	ClientIPKeys map[string]bool
	// Limiter applies per-tenant rate limits (nil: unlimited).
	Limiter *RateLimiter
	Limits  validate.Limits
	Log     Logger
	Now     func() time.Time
}

// CloseLog looks up the last conversation_closed event stored for a
// conversation: its event id and when it was stored (found false when none).
type CloseLog interface {
	LastClose(ctx context.Context, tenantID, conversationID string) (eventID string, storedAt time.Time, found bool, err error)
}

// Server implements ingestv1.IngestServiceServer.
type Server struct {
	ingestv1.UnimplementedIngestServiceServer
	d Deps
}

// Logger is the subset of slog the server uses.
type Logger interface {
	InfoContext(ctx context.Context, msg string, args ...any)
	ErrorContext(ctx context.Context, msg string, args ...any)
}

// New returns a server.
func New(d Deps) *Server {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Enricher == nil {
		d.Enricher = enrich.New(nil)
	}
	return &Server{d: d}
}

// Scopes lists the API-key scope each method needs: all need "ingest".
func Scopes() map[string]string {
	return grpcx.MethodScopes(ingestv1.IngestService_ServiceDesc, grpcx.ScopeIngest, nil)
}

// Append validates the whole batch, then appends every event.
func (s *Server) Append(ctx context.Context, req *ingestv1.AppendRequest) (*ingestv1.AppendResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	return s.appendBatch(ctx, p, req.GetEvents())
}

// AppendStream accepts batches until the client closes the stream.
func (s *Server) AppendStream(stream ingestv1.IngestService_AppendStreamServer) error {
	ctx := stream.Context()
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return err
	}
	if p.Publishable() {
		return status.Error(codes.PermissionDenied, "publishable (widget) keys cannot use AppendStream; use Append or the single-event calls")
	}
	out := &ingestv1.AppendResponse{}
	for requests := 1; ; requests++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(out)
		}
		if err != nil {
			return err
		}
		if l := s.d.Limits.MaxStreamRequests; l > 0 && requests > l {
			return grpcx.ResourceExhausted(fmt.Sprintf("AppendStream: more than %d requests on one stream; the earlier %d are stored; close this stream and open a new one", l, requests-1), 0)
		}
		if l := s.d.Limits.MaxStreamEvents; l > 0 && len(out.Results)+len(req.GetEvents()) > l {
			return grpcx.ResourceExhausted(fmt.Sprintf("AppendStream: more than %d events on one stream; the %d before this request are stored; close this stream and open a new one", l, len(out.Results)), 0)
		}
		res, err := s.appendBatch(ctx, p, req.GetEvents())
		if err != nil {
			return err
		}
		out.Results = append(out.Results, res.Results...)
	}
}

// StartConversation appends a ConversationStarted event.
func (s *Server) StartConversation(ctx context.Context, req *ingestv1.StartConversationRequest) (*ingestv1.EventResult, error) {
	return s.one(ctx, req, orEmpty(req.GetConversation()))
}

// PostMessage appends a MessagePosted event.
func (s *Server) PostMessage(ctx context.Context, req *ingestv1.PostMessageRequest) (*ingestv1.EventResult, error) {
	return s.one(ctx, req, orEmpty(req.GetMessage()))
}

// RecordUsage appends a UsageRecorded event.
func (s *Server) RecordUsage(ctx context.Context, req *ingestv1.RecordUsageRequest) (*ingestv1.EventResult, error) {
	return s.one(ctx, req, orEmpty(req.GetUsage()))
}

// CloseConversation appends a ConversationClosed event.
func (s *Server) CloseConversation(ctx context.Context, req *ingestv1.CloseConversationRequest) (*ingestv1.EventResult, error) {
	return s.one(ctx, req, orEmpty(req.GetClose()))
}

func orEmpty[T any, P interface {
	*T
	proto.Message
}](p P) P {
	if p == nil {
		return P(new(T))
	}
	return p
}

// convenienceRequest is what the single-event calls have in common.
type convenienceRequest interface {
	GetConversationId() string
	GetOccurredAt() *timestamppb.Timestamp
	GetClientEventId() string
}

// one appends the single event of a convenience call: its request
// envelope (eventbus.NewEnvelope without tenant) goes the way of Append's.
func (s *Server) one(ctx context.Context, req convenienceRequest, payload proto.Message) (*ingestv1.EventResult, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	env := eventbus.NewEnvelope("", req.GetConversationId(), payload,
		eventbus.OccurredAtTimestamp(req.GetOccurredAt()), eventbus.WithClientEventID(req.GetClientEventId()))
	res, err := s.appendBatch(ctx, p, []*eventv1.Envelope{env})
	if err != nil {
		return nil, err
	}
	return res.Results[0], nil
}

func (s *Server) appendBatch(ctx context.Context, p grpcx.Principal, events []*eventv1.Envelope) (*ingestv1.AppendResponse, error) {
	tenant := p.TenantID
	if len(events) == 0 {
		return nil, grpcx.Invalid("events", "at least one event is required")
	}
	if len(events) > s.d.Limits.MaxBatch {
		return nil, grpcx.Invalid("events", fmt.Sprintf("%d events; at most %d per request", len(events), s.d.Limits.MaxBatch))
	}
	now := s.d.Now()
	// Validate everything first: a rejected batch appends nothing.
	for i, env := range events {
		if v := validate.Envelope(s.d.Limits, i, env, tenant, now); v != nil {
			return nil, grpcx.Invalid(v.Field, v.Description)
		}
	}
	for _, env := range events {
		env.TenantId = tenant
		if env.EventId == "" {
			if env.ClientEventId != "" {
				env.EventId = eventbus.ClientEventID(tenant, env.ConversationId, env.ClientEventId)
			} else {
				env.EventId = eventbus.NewEventID()
			}
		}
	}
	var started map[string]bool
	if p.Publishable() {
		var err error
		if started, err = s.authorizeWidget(ctx, p, events); err != nil {
			return nil, err
		}
	}
	if s.d.Ended != nil {
		resent := map[string]bool{}
		for i, env := range events {
			e, ok := s.d.Ended.Ended(tenant, env.ConversationId)
			if !ok {
				continue
			}
			r, seen := resent[env.ConversationId]
			if !seen {
				var err error
				if r, err = s.resentClose(ctx, tenant, env.ConversationId, events, now); err != nil {
					s.d.Log.ErrorContext(ctx, "looking up a stored close", "err", err)
					return nil, grpcx.Unavailable("event log unavailable; nothing from this request was stored")
				}
				resent[env.ConversationId] = r
			}
			if !r {
				return nil, ended(i, env.ConversationId, e)
			}
		}
	}
	if err := s.d.Limiter.Allow(tenant, len(events), now); err != nil {
		return nil, err
	}
	req := s.requestInfo(ctx, p)
	req.TenantID = tenant
	if err := s.mask(ctx, tenant, events); err != nil {
		return nil, err
	}
	for _, env := range events {
		if env.OccurredAt == nil {
			env.OccurredAt = timestamppb.New(now)
		}
		env.RecordedAt = timestamppb.New(now)
		env.Producer = ""
		if env.CorrelationId == "" {
			env.CorrelationId = env.EventId
		}
		if cs := env.GetConversationStarted(); cs != nil {
			s.d.Enricher.Started(cs, req)
		}
	}
	if len(events) == 1 {
		ctx = telemetry.WithConversation(ctx, tenant, events[0].ConversationId)
	}
	acks, err := s.d.Committer.Append(ctx, events)
	var tooLarge *eventbus.TooLargeError
	if errors.As(err, &tooLarge) {
		return nil, grpcx.Invalid(fmt.Sprintf("events[%d]", tooLarge.Index), fmt.Sprintf("%d bytes encoded; the event log accepts at most %d", tooLarge.Size, tooLarge.Max))
	}
	if err != nil {
		if s.d.Log != nil {
			s.d.Log.InfoContext(ctx, "append failed", "error", err.Error(), "events", len(events))
		}
		if errors.Is(err, eventbus.ErrUnavailable) {
			return nil, grpcx.Unavailable("event log unavailable; nothing from this request may be assumed stored. Retrying is safe for events that carry event_id or client_event_id (stored ones come back as duplicates)")
		}
		return nil, grpcx.Internal("appending to the event log failed; the error is logged")
	}
	out := &ingestv1.AppendResponse{Results: make([]*ingestv1.EventResult, len(events))}
	for i, env := range events {
		out.Results[i] = &ingestv1.EventResult{EventId: env.EventId, StreamSequence: acks[i].Sequence, Duplicate: acks[i].Duplicate}
		if started[env.ConversationId] && env.GetConversationStarted() != nil {
			out.Results[i].ConversationToken = s.d.Tokens.Issue(tenant, env.ConversationId, p.KeyID)
		}
	}
	return out, nil
}

// resentClose reports whether events hold the conversation_closed that
// ended conversation, stored within the duplicate window: the request is
// then a resend of the one that closed it (its answer was lost), and
// appending it again yields duplicates, as for any resend.
func (s *Server) resentClose(ctx context.Context, tenant, conversation string, events []*eventv1.Envelope, now time.Time) (bool, error) {
	if s.d.Closes == nil || s.d.DuplicateWindow <= 0 {
		return false, nil
	}
	ids := map[string]bool{}
	for _, env := range events {
		if env.ConversationId == conversation && env.GetConversationClosed() != nil {
			ids[env.EventId] = true
		}
	}
	if len(ids) == 0 {
		return false, nil
	}
	id, storedAt, found, err := s.d.Closes.LastClose(ctx, tenant, conversation)
	if err != nil || !found {
		return false, err
	}
	// Keep a margin: the duplicate window is counted by the server's clock.
	return ids[id] && now.Sub(storedAt) < s.d.DuplicateWindow*9/10, nil
}

// ended is the FailedPrecondition for an event of an ended conversation.
func ended(i int, conv string, e convview.Ended) error {
	reason := strings.ToLower(strings.TrimPrefix(e.Reason.String(), "END_REASON_"))
	msg := fmt.Sprintf("events[%d]: conversation %s ended at %s (%s); it accepts no more events", i, conv, e.EndedAt.UTC().Format(time.RFC3339), reason)
	return grpcx.FailedPrecondition("CONVERSATION_ENDED", fmt.Sprintf("events[%d].conversation_id", i), msg)
}

// mask applies the tenant's masking rules to events in place, before
// enrichment (generated display names are never masked) and before the
// commit. Without the rules (database down, nothing cached) nothing is
// stored: events are never stored unmasked.
func (s *Server) mask(ctx context.Context, tenant string, events []*eventv1.Envelope) error {
	if s.d.Masking == nil {
		return nil
	}
	set, err := s.d.Masking.Rules(ctx, tenant)
	if err != nil {
		s.d.Log.ErrorContext(ctx, "loading masking rules", "err", err)
		return grpcx.Unavailable("masking rules unavailable; nothing from this request was stored")
	}
	for _, env := range events {
		set.Envelope(env)
	}
	return nil
}
