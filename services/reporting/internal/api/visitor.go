package api

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/parley-dev/parley/libs/grpcx"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/filter"
	"github.com/parley-dev/parley/services/reporting/internal/query"
)

// GetVisitor returns one visitor with a page of their conversations.
func (s *Server) GetVisitor(ctx context.Context, req *reportingv1.GetVisitorRequest) (*reportingv1.Visitor, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	token := req.GetVisitorToken()
	if err := checkID("visitor_token", token, true); err != nil {
		return nil, err
	}
	size, after, err := page(req.GetPageSize(), DefaultPageSize, MaxPageSize, req.GetPageToken(), query.DecodeCursor)
	if err != nil {
		return nil, err
	}
	v, err := s.d.Reader.Visitor(ctx, p.TenantID, token)
	if errors.Is(err, query.ErrNotFound) {
		return nil, grpcx.NotFound("no conversation of visitor %q", token)
	}
	if err != nil {
		return nil, s.unavailable(ctx, "visitor", err)
	}
	w, viol := filter.Build(p.TenantID, &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "all_time"}, VisitorToken: token}, s.d.Now(), "UTC")
	if viol != nil {
		return nil, grpcx.Invalid("visitor_token", viol.Description)
	}
	pg, err := s.d.Reader.List(ctx, w, size, after)
	if err != nil {
		return nil, s.unavailable(ctx, "visitor conversations", err)
	}
	out := &reportingv1.Visitor{
		VisitorToken: v.Token, DisplayName: v.DisplayName, FirstSeen: ts(v.FirstSeen), LastSeen: ts(v.LastSeen),
		ConversationCount: v.Conversations, LeadCount: v.LeadCount, Variables: v.Variables,
	}
	for _, l := range v.Leads {
		out.Leads = append(out.Leads, leadProto(l))
	}
	out.Conversations, out.NextPageToken = summaries(pg)
	return out, nil
}

// summaries maps a page of the list to the API, with its next page token.
func summaries(pg *query.Page) ([]*reportingv1.ConversationSummary, string) {
	out := make([]*reportingv1.ConversationSummary, 0, len(pg.Rows))
	for _, r := range pg.Rows {
		out = append(out, summary(r))
	}
	if pg.Next == nil {
		return out, ""
	}
	return out, pg.Next.Encode()
}

// GetVisitorStats counts the visitors, and the returning ones, of the
// conversations matching the filter.
func (s *Server) GetVisitorStats(ctx context.Context, req *reportingv1.GetVisitorStatsRequest) (*reportingv1.VisitorStats, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	w, err := s.where(ctx, p.TenantID, req.GetFilter())
	if err != nil {
		return nil, err
	}
	visitors, returning, err := s.d.Reader.VisitorStats(ctx, w)
	if err != nil {
		return nil, s.unavailable(ctx, "visitor stats", err)
	}
	return &reportingv1.VisitorStats{Visitors: visitors, ReturningVisitors: returning, ReturningRate: ratio(returning, visitors)}, nil
}

// ListCatalog lists the flows and nodes seen in the range (default: the
// last 30 days), for one bot or all.
func (s *Server) ListCatalog(ctx context.Context, req *reportingv1.ListCatalogRequest) (*reportingv1.Catalog, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkID("bot_id", req.GetBotId(), false); err != nil {
		return nil, err
	}
	tr := req.GetTimeRange()
	if tr == nil {
		tr = &reportingv1.TimeRange{Preset: "last_30_days"}
	}
	w, err := s.where(ctx, p.TenantID, &reportingv1.Filter{TimeRange: tr})
	if err != nil {
		return nil, err
	}
	flows, nodes, err := s.d.Reader.Catalog(ctx, p.TenantID, req.GetBotId(), w.From, w.To)
	if err != nil {
		return nil, s.unavailable(ctx, "catalog", err)
	}
	out := &reportingv1.Catalog{}
	for _, f := range flows {
		out.Flows = append(out.Flows, &reportingv1.CatalogFlow{FlowId: f.FlowID, Name: f.Name, Conversations: f.Conversations})
	}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, &reportingv1.CatalogNode{NodeId: n.NodeID, FlowId: n.FlowID, HasPrompt: n.HasPrompt, Conversations: n.Conversations})
	}
	return out, nil
}

// checkID validates an identifier field: UTF-8, at most filter.MaxValueLen
// characters, present when required.
func checkID(field, v string, required bool) error {
	switch {
	case v == "" && required:
		return grpcx.Invalid(field, "required")
	case !utf8.ValidString(v) || utf8.RuneCountInString(v) > filter.MaxValueLen:
		return grpcx.Invalid(field, fmt.Sprintf("at most %d characters of UTF-8", filter.MaxValueLen))
	}
	return nil
}
