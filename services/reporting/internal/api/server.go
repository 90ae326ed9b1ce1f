// Package api is reporting's gRPC adapter.
package api

import (
	"context"
	"errors"
	"log/slog"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/projector"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Server implements reportingv1.ReportingServiceServer.
type Server struct {
	reportingv1.UnimplementedReportingServiceServer
	reader *query.Reader
	log    *slog.Logger
}

// New returns a server.
func New(r *query.Reader, log *slog.Logger) *Server { return &Server{reader: r, log: log} }

// Scopes lists the API-key scope each method needs: every method reads.
func Scopes() map[string]string {
	return grpcx.MethodScopes(reportingv1.ReportingService_ServiceDesc, grpcx.ScopeRead, nil)
}

// GetConversation returns one conversation of the caller's tenant with its
// transcript.
func (s *Server) GetConversation(ctx context.Context, req *reportingv1.GetConversationRequest) (*reportingv1.Conversation, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !eventbus.ValidConversationID(req.GetConversationId()) {
		return nil, invalid("conversation_id", "required; 1-128 characters of A-Z a-z 0-9 _ -")
	}
	t, err := s.reader.Transcript(ctx, p.TenantID, req.GetConversationId())
	if errors.Is(err, query.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "conversation %q not found", req.GetConversationId())
	}
	if err != nil {
		s.log.ErrorContext(ctx, "transcript query failed", "err", err)
		return nil, status.Error(codes.Unavailable, "analytics store unavailable; retry later")
	}
	out := &reportingv1.Conversation{
		Summary: &reportingv1.ConversationSummary{
			ConversationId: t.ConversationID,
			StartedAt:      timestamppb.New(t.FirstEventAt),
			LastActivityAt: timestamppb.New(t.LastEventAt),
			MessageCount:   uint32(len(t.Messages)),
		},
		TraceIds: t.TraceIDs,
	}
	for _, m := range t.Messages {
		out.Messages = append(out.Messages, &reportingv1.Message{
			EventId: m.EventID, MessageId: m.MessageID, Role: projector.RoleFromName(m.Role), Text: m.Text,
			OccurredAt: timestamppb.New(m.OccurredAt), Intent: m.Intent, IntentConfidence: float64(m.IntentConfidence),
			Unidentified: m.Unidentified, FlowId: m.FlowID, NodeId: m.NodeID, AgentId: m.AgentID, ResponseTimeMs: m.ResponseTimeMS,
		})
	}
	if n := len(t.Messages); n > 0 {
		out.Summary.LastMessageText = t.Messages[n-1].Text
	}
	return out, nil
}

// ListConversations is not built yet.
func (s *Server) ListConversations(context.Context, *reportingv1.ListConversationsRequest) (*reportingv1.ListConversationsResponse, error) {
	return nil, status.Error(codes.Unimplemented, "reporting: ListConversations is not available yet (conversation projections are pending); use GetConversation")
}

// GetDashboard is not built yet.
func (s *Server) GetDashboard(context.Context, *reportingv1.GetDashboardRequest) (*reportingv1.Dashboard, error) {
	return nil, status.Error(codes.Unimplemented, "reporting: GetDashboard is not available yet")
}

// RunReport is not built yet.
func (s *Server) RunReport(context.Context, *reportingv1.RunReportRequest) (*reportingv1.Report, error) {
	return nil, status.Error(codes.Unimplemented, "reporting: RunReport is not available yet")
}

func invalid(field, desc string) error {
	st := status.New(codes.InvalidArgument, field+": "+desc)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}}); err == nil {
		return d.Err()
	}
	return st.Err()
}
