// Package api is reporting's gRPC adapter: it authorizes the caller's
// tenant, validates requests, builds filters and maps query results to the
// API.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/parley-dev/parley/libs/grpcx"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/filter"
	"github.com/parley-dev/parley/services/reporting/internal/prices"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"github.com/parley-dev/parley/services/reporting/internal/rebuild"
	"github.com/parley-dev/parley/services/reporting/internal/share"
	"github.com/parley-dev/parley/services/reporting/internal/sharelinks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Page sizes of ListConversations.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// TimeZones tells a tenant's time zone.
type TimeZones interface {
	TimeZone(ctx context.Context, tenantID string) (string, error)
}

// Deps are what the server needs.
type Deps struct {
	Reader    *query.Reader
	TimeZones TimeZones
	// Signer and Links enable share links (both or neither).
	Signer *share.Signer
	Links  *sharelinks.Store
	// Prices is the tenants' model price tables (nil: none).
	Prices *prices.Store
	// ShareBaseURL prefixes share links: <base>/v1/shared/<token>.
	ShareBaseURL string
	ShareTTL     time.Duration
	// Watermark tells and awaits the projection's freshness (nil: answers
	// carry none and min_sequence is not waited for).
	Watermark *Watermark
	// Bots is the tenants' bot registry (nil: reports show bot ids).
	Bots BotNames
	// ConsoleBaseURL prefixes the sessions report's conversation links
	// (<base>/conversations/<id>; empty: no link).
	ConsoleBaseURL string
	Log            *slog.Logger
	Now            func() time.Time
}

// BotNames tells a tenant's bot display names by bot id.
type BotNames interface {
	BotNames(ctx context.Context, tenantID string) (map[string]string, error)
}

// Server implements reportingv1.ReportingServiceServer.
type Server struct {
	reportingv1.UnimplementedReportingServiceServer
	d       Deps
	rebuild *rebuild.Rebuilder
}

// New returns a server.
func New(d Deps) *Server {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.ShareTTL <= 0 {
		d.ShareTTL = 7 * 24 * time.Hour
	}
	return &Server{d: d}
}

// Scopes lists the API-key scope each method needs: every method reads;
// GetConversation also opens without a key when given a valid share token;
// RebuildProjections, which covers every tenant, needs a platform key's
// operator scope; the model price table needs admin.
func Scopes() map[string]string {
	return grpcx.MethodScopes(reportingv1.ReportingService_ServiceDesc, grpcx.ScopeRead,
		map[string]string{"GetConversation": grpcx.Optional(grpcx.ScopeRead), "RebuildProjections": grpcx.ScopeOperator,
			"SetModelPrice": grpcx.ScopeAdmin, "ListModelPrices": grpcx.ScopeAdmin})
}

// ListConversations lists the tenant's conversations matching the filter,
// newest first, with the total count.
func (s *Server) ListConversations(ctx context.Context, req *reportingv1.ListConversationsRequest) (*reportingv1.ListConversationsResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	size, after, err := page(req.GetPageSize(), DefaultPageSize, MaxPageSize, req.GetPageToken(), query.DecodeCursor)
	if err != nil {
		return nil, err
	}
	w, err := s.where(ctx, p.TenantID, req.GetFilter())
	if err != nil {
		return nil, err
	}
	fresh, err := s.fresh(ctx, req.GetMinSequence())
	if err != nil {
		return nil, err
	}
	page, err := s.d.Reader.List(ctx, w, size, after)
	if err != nil {
		return nil, s.unavailable(ctx, "list", err)
	}
	out := &reportingv1.ListConversationsResponse{TotalCount: page.Total, Freshness: fresh}
	out.Conversations, out.NextPageToken = summaries(page)
	return out, nil
}

// GetDashboard returns the dashboard figures for the filter.
func (s *Server) GetDashboard(ctx context.Context, req *reportingv1.GetDashboardRequest) (*reportingv1.Dashboard, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	w, err := s.where(ctx, p.TenantID, req.GetFilter())
	if err != nil {
		return nil, err
	}
	// The trend covers 30 days up to the range's end, whatever the range;
	// "active now" counts conversations started before the range's end,
	// however long before. Both in the range's resolved time zone.
	tz := w.Location.String()
	tw, err := s.where(ctx, p.TenantID, withRange(req.GetFilter(), &reportingv1.TimeRange{Preset: "all_time", TimeZone: tz}))
	if err != nil {
		return nil, err
	}
	aw := tw
	if !w.To.IsZero() {
		aw, err = s.where(ctx, p.TenantID, withRange(req.GetFilter(), &reportingv1.TimeRange{
			Preset: "custom", From: timestamppb.New(filter.MinTime), To: timestamppb.New(w.To), TimeZone: tz}))
		if err != nil {
			return nil, err
		}
	}
	end := s.d.Now()
	if !w.To.IsZero() {
		end = w.To.Add(-time.Microsecond)
	}
	fresh, err := s.fresh(ctx, req.GetMinSequence())
	if err != nil {
		return nil, err
	}
	d, err := s.d.Reader.Dashboard(ctx, w, tw, aw, end, w.Location)
	if err != nil {
		return nil, s.unavailable(ctx, "dashboard", err)
	}
	out := &reportingv1.Dashboard{
		Total: d.Total, Active: d.Active, Ended: d.Ended, Messages: d.Messages,
		LeadConversionRate: ratio(d.WithLead, d.Total), GoalCompletionRate: ratio(d.WithGoal, d.Total),
		Tokens: d.Tokens, ActiveNow: d.ActiveNow, Leads: d.WithLead, Freshness: fresh,
	}
	out.Regions = counts(d.Regions, d.Total)
	for _, c := range d.Costs {
		out.Costs = append(out.Costs, &reportingv1.CurrencyCost{Currency: c.Currency, CostMicros: c.CostMicros, Conversations: c.Conversations})
	}
	if len(d.Costs) == 1 {
		out.CostMicros = d.Costs[0].CostMicros
	}
	for _, fu := range d.Funnels {
		ff := &reportingv1.FlowFunnel{FlowId: fu.FlowID, Started: fu.Started, Completed: fu.Completed, Steps: counts(fu.Steps, fu.Started)}
		for _, dr := range fu.Drops {
			ff.Drops = append(ff.Drops, &reportingv1.FlowDrop{StepId: dr.StepID, NodeId: dr.NodeID, Conversations: dr.Conversations, SampleConversationIds: dr.Samples})
		}
		out.Funnels = append(out.Funnels, ff)
	}
	if d.Total > 0 {
		out.AverageMessages = float64(d.Messages) / float64(d.Total)
	}
	out.Statuses = []*reportingv1.Count{
		{Key: "active", Count: d.Active, Share: ratio(d.Active, d.Total)},
		{Key: "ended", Count: d.Ended, Share: ratio(d.Ended, d.Total)},
		{Key: "no_operator_response", Count: d.NoOperatorResponse, Share: ratio(d.NoOperatorResponse, d.Total)},
	}
	for _, day := range d.Trend {
		out.Trend = append(out.Trend, &reportingv1.DayCount{Date: day.Date, Conversations: day.Conversations, Messages: day.Messages})
	}
	out.Countries = counts(d.Countries, d.Total)
	out.Cities = counts(d.Cities, d.Total)
	out.TopTags = counts(d.TopTags, d.Total)
	return out, nil
}

func (s *Server) where(ctx context.Context, tenant string, f *reportingv1.Filter) (*filter.Where, error) {
	tz := "UTC"
	if f.GetTimeRange().GetTimeZone() == "" && s.d.TimeZones != nil {
		z, err := s.d.TimeZones.TimeZone(ctx, tenant)
		if err != nil {
			return nil, s.unavailable(ctx, "tenant time zone", err)
		}
		tz = z
	}
	w, v := filter.Build(tenant, f, s.d.Now(), tz)
	if v != nil {
		return nil, grpcx.Invalid(v.Field, v.Description)
	}
	return w, nil
}

func (s *Server) unavailable(ctx context.Context, what string, err error) error {
	if errors.Is(err, context.Canceled) {
		return status.FromContextError(err).Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Errorf(codes.DeadlineExceeded, "%s query took too long; narrow the filter", what)
	}
	s.d.Log.ErrorContext(ctx, "query failed", "query", what, "err", err)
	return grpcx.Unavailable("analytics store unavailable; retry later")
}

// page reads a request's page size (def when 0, at most max) and decodes
// its page token (nil when empty).
func page[C any](n uint32, def, max int, token string, decode func(string) (C, error)) (int, *C, error) {
	size := int(n)
	switch {
	case size == 0:
		size = def
	case size > max:
		return 0, nil, grpcx.Invalid("page_size", fmt.Sprintf("at most %d", max))
	}
	if token == "" {
		return size, nil, nil
	}
	c, err := decode(token)
	if err != nil {
		return 0, nil, grpcx.Invalid("page_token", "not a token from a previous response")
	}
	return size, &c, nil
}

func summary(r query.Summary) *reportingv1.ConversationSummary {
	return &reportingv1.ConversationSummary{
		ConversationId: r.ConversationID, BotId: r.BotID,
		Channel:            eventv1.Channel(enumValue(eventv1.Channel_value, "CHANNEL_", r.Channel)),
		Platform:           eventv1.Platform(enumValue(eventv1.Platform_value, "PLATFORM_", r.Platform)),
		Type:               eventv1.ConversationType(enumValue(eventv1.ConversationType_value, "CONVERSATION_TYPE_", r.Type)),
		VisitorDisplayName: r.VisitorName, VisitorToken: r.VisitorToken,
		StartedAt: ts(r.StartedAt), LastActivityAt: ts(r.LastActivityAt), EndedAt: ts(r.EndedAt),
		Status: r.Status, MessageCount: r.MessageCount, LastMessageText: r.LastMessageText,
		EndReason:  eventv1.EndReason(enumValue(eventv1.EndReason_value, "END_REASON_", r.EndReason)),
		Engagement: eventv1.Engagement(enumValue(eventv1.Engagement_value, "ENGAGEMENT_", r.Engagement)),
		Resolved:   r.Resolved,
		Tags:       r.Tags, Labels: r.Labels, Flagged: r.Flagged, TakenOver: r.TakenOver, AgentName: r.AgentName,
		OperatorNoResponse: r.OperatorNoResponse, Country: r.Country, Region: r.Region, City: r.City,
		UnidentifiedCount: r.UnidentifiedCount, Goals: r.Goals, HasLead: r.Leads > 0,
	}
}

func enumValue(values map[string]int32, prefix, name string) int32 {
	if name == "" {
		return 0
	}
	return values[prefix+strings.ToUpper(name)]
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func ratio(n, d uint64) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

func counts(bs []query.Bucket, total uint64) []*reportingv1.Count {
	out := make([]*reportingv1.Count, 0, len(bs))
	for _, b := range bs {
		out = append(out, &reportingv1.Count{Key: b.Key, Count: b.Count, Share: ratio(b.Count, total)})
	}
	return out
}

// withRange returns a copy of f with the time range r.
func withRange(f *reportingv1.Filter, r *reportingv1.TimeRange) *reportingv1.Filter {
	out := &reportingv1.Filter{}
	if f != nil {
		out = proto.Clone(f).(*reportingv1.Filter)
	}
	out.TimeRange = r
	return out
}

// fresh waits for min_sequence and reads the projection's freshness (nil
// without a watermark, or when it cannot be read and the request did not
// ask to wait).
func (s *Server) fresh(ctx context.Context, min uint64) (*reportingv1.Freshness, error) {
	if s.d.Watermark == nil {
		return nil, nil
	}
	if err := s.d.Watermark.Wait(ctx, min); err != nil {
		return nil, err
	}
	f, err := s.d.Watermark.Read(ctx)
	if err != nil && min == 0 {
		// The answer does not depend on the log or the positions: it goes
		// out without freshness (Read logged why).
		return nil, nil
	}
	return f, err
}

// RunReport returns one report over the conversations matching the filter.
func (s *Server) RunReport(ctx context.Context, req *reportingv1.RunReportRequest) (*reportingv1.Report, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(query.ReportKinds, req.GetKind()) {
		return nil, grpcx.Invalid("kind", "one of "+strings.Join(query.ReportKinds, ", "))
	}
	if req.GetLimit() > query.MaxReportRows {
		return nil, grpcx.Invalid("limit", fmt.Sprintf("at most %d", query.MaxReportRows))
	}
	loc := (*time.Location)(nil)
	if tz := req.GetTimeZone(); tz != "" {
		if err := ValidTimeZone("time_zone", tz); err != nil {
			return nil, err
		}
		loc, _ = time.LoadLocation(tz)
	}
	w, err := s.where(ctx, p.TenantID, req.GetFilter())
	if err != nil {
		return nil, err
	}
	if loc == nil {
		loc = w.Location
	}
	o := query.ReportOptions{WithTimes: req.GetWithMessageTimes(), Limit: int(req.GetLimit()), Location: loc, ConsoleBaseURL: s.d.ConsoleBaseURL}
	if s.d.Bots != nil {
		if o.BotNames, err = s.d.Bots.BotNames(ctx, p.TenantID); err != nil {
			return nil, s.unavailable(ctx, "bot registry", err)
		}
	}
	fresh, err := s.fresh(ctx, req.GetMinSequence())
	if err != nil {
		return nil, err
	}
	t, err := s.d.Reader.Report(ctx, req.GetKind(), w, o)
	if err != nil {
		return nil, s.unavailable(ctx, "report "+req.GetKind(), err)
	}
	out := &reportingv1.Report{Columns: t.Columns, Truncated: t.Truncated, Rows: make([]*reportingv1.ReportRow, len(t.Rows)), Freshness: fresh}
	for i, r := range t.Rows {
		out.Rows[i] = &reportingv1.ReportRow{Values: r}
	}
	return out, nil
}
