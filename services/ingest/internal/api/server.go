// Package api is ingest's gRPC adapter: it authenticates the caller's tenant,
// validates the batch as a whole, completes envelopes and appends them.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/telemetry"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest/internal/validate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Appender stores envelopes in the event log.
type Appender interface {
	Publish(ctx context.Context, env *eventv1.Envelope) (eventbus.PubAck, error)
}

// Server implements ingestv1.IngestServiceServer.
type Server struct {
	ingestv1.UnimplementedIngestServiceServer
	log    Logger
	append Appender
	limits validate.Limits
	now    func() time.Time
}

// Logger is the subset of slog the server uses.
type Logger interface {
	InfoContext(ctx context.Context, msg string, args ...any)
}

// New returns a server.
func New(a Appender, limits validate.Limits, log Logger, now func() time.Time) *Server {
	return &Server{append: a, limits: limits, log: log, now: now}
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
	return s.appendBatch(ctx, p.TenantID, req.GetEvents())
}

// AppendStream accepts batches until the client closes the stream.
func (s *Server) AppendStream(stream ingestv1.IngestService_AppendStreamServer) error {
	ctx := stream.Context()
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return err
	}
	out := &ingestv1.AppendResponse{}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(out)
		}
		if err != nil {
			return err
		}
		res, err := s.appendBatch(ctx, p.TenantID, req.GetEvents())
		if err != nil {
			return err
		}
		out.Results = append(out.Results, res.Results...)
	}
}

// StartConversation appends a ConversationStarted event.
func (s *Server) StartConversation(ctx context.Context, req *ingestv1.StartConversationRequest) (*ingestv1.EventResult, error) {
	return s.one(ctx, &eventv1.Envelope{ConversationId: req.GetConversationId(), OccurredAt: req.GetOccurredAt(), ClientEventId: req.GetClientEventId(),
		Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: orEmpty(req.GetConversation())}})
}

// PostMessage appends a MessagePosted event.
func (s *Server) PostMessage(ctx context.Context, req *ingestv1.PostMessageRequest) (*ingestv1.EventResult, error) {
	return s.one(ctx, &eventv1.Envelope{ConversationId: req.GetConversationId(), OccurredAt: req.GetOccurredAt(), ClientEventId: req.GetClientEventId(),
		Payload: &eventv1.Envelope_MessagePosted{MessagePosted: orEmpty(req.GetMessage())}})
}

// RecordUsage appends a UsageRecorded event.
func (s *Server) RecordUsage(ctx context.Context, req *ingestv1.RecordUsageRequest) (*ingestv1.EventResult, error) {
	return s.one(ctx, &eventv1.Envelope{ConversationId: req.GetConversationId(), OccurredAt: req.GetOccurredAt(), ClientEventId: req.GetClientEventId(),
		Payload: &eventv1.Envelope_UsageRecorded{UsageRecorded: orEmpty(req.GetUsage())}})
}

// CloseConversation appends a ConversationClosed event.
func (s *Server) CloseConversation(ctx context.Context, req *ingestv1.CloseConversationRequest) (*ingestv1.EventResult, error) {
	return s.one(ctx, &eventv1.Envelope{ConversationId: req.GetConversationId(), OccurredAt: req.GetOccurredAt(), ClientEventId: req.GetClientEventId(),
		Payload: &eventv1.Envelope_ConversationClosed{ConversationClosed: orEmpty(req.GetClose())}})
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

func (s *Server) one(ctx context.Context, env *eventv1.Envelope) (*ingestv1.EventResult, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.appendBatch(ctx, p.TenantID, []*eventv1.Envelope{env})
	if err != nil {
		return nil, err
	}
	return res.Results[0], nil
}

func (s *Server) appendBatch(ctx context.Context, tenant string, events []*eventv1.Envelope) (*ingestv1.AppendResponse, error) {
	if len(events) == 0 {
		return nil, invalid(validate.Violation{Field: "events", Description: "at least one event is required"})
	}
	if len(events) > s.limits.MaxBatch {
		return nil, invalid(validate.Violation{Field: "events", Description: fmt.Sprintf("%d events; at most %d per request", len(events), s.limits.MaxBatch)})
	}
	now := s.now()
	// Validate everything first: a rejected batch appends nothing.
	for i, env := range events {
		if v := validate.Envelope(s.limits, i, env, tenant, now); v != nil {
			return nil, invalid(*v)
		}
	}
	out := &ingestv1.AppendResponse{Results: make([]*ingestv1.EventResult, 0, len(events))}
	for _, env := range events {
		env.TenantId = tenant
		if env.EventId == "" {
			if env.ClientEventId != "" {
				env.EventId = eventbus.ClientEventID(tenant, env.ConversationId, env.ClientEventId)
			} else {
				env.EventId = eventbus.NewEventID()
			}
		}
		if env.OccurredAt == nil {
			env.OccurredAt = timestamppb.New(now)
		}
		env.RecordedAt = timestamppb.New(now)
		env.Producer = ""
		if env.CorrelationId == "" {
			env.CorrelationId = env.EventId
		}
		ack, err := s.append.Publish(telemetry.WithConversation(ctx, tenant, env.ConversationId), env)
		if err != nil {
			if errors.Is(err, eventbus.ErrUnavailable) {
				return nil, status.Errorf(codes.Unavailable, "event log unavailable; %d of %d events stored. Retrying is safe for events that carry event_id or client_event_id (stored ones come back as duplicates): %v", len(out.Results), len(events), err)
			}
			return nil, status.Errorf(codes.Internal, "append: %v", err)
		}
		out.Results = append(out.Results, &ingestv1.EventResult{EventId: env.EventId, StreamSequence: ack.Sequence, Duplicate: ack.Duplicate})
	}
	return out, nil
}

func invalid(v validate.Violation) error {
	st := status.New(codes.InvalidArgument, v.Error())
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: v.Field, Description: v.Description}}}); err == nil {
		return d.Err()
	}
	return st.Err()
}
