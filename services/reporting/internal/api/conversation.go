package api

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
	"github.com/parley-dev/parley/services/reporting/internal/prices"
	"github.com/parley-dev/parley/services/reporting/internal/projector"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"github.com/parley-dev/parley/services/reporting/internal/share"
	"github.com/parley-dev/parley/services/reporting/internal/sharelinks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Transcript page sizes of GetConversation.
const (
	DefaultTranscriptPage = 500
	MaxTranscriptPage     = 2000
)

// access is who may see a conversation and how.
type access struct {
	tenant, conv string
	// keyID is the API key's id; empty for a share-token call.
	keyID string
	// shared: the call came with a share token and gets the shared view.
	shared bool
}

// GetConversation returns one conversation of the caller's tenant with one
// page of its transcript, its state and a share link (not for calls that
// came with a share token, which get the shared view).
func (s *Server) GetConversation(ctx context.Context, req *reportingv1.GetConversationRequest) (*reportingv1.Conversation, error) {
	a, err := s.conversationAccess(ctx, req)
	if err != nil {
		return nil, err
	}
	size, after, err := page(req.GetPageSize(), DefaultTranscriptPage, MaxTranscriptPage, req.GetPageToken(), query.DecodeMessageCursor)
	if err != nil {
		return nil, err
	}
	t, err := s.d.Reader.Transcript(ctx, a.tenant, a.conv, size, after)
	if errors.Is(err, query.ErrNotFound) {
		return nil, grpcx.NotFound("conversation %q not found", a.conv)
	}
	if err != nil {
		return nil, s.unavailable(ctx, "transcript", err)
	}
	d, err := s.d.Reader.Conversation(ctx, a.tenant, a.conv)
	if err != nil && !errors.Is(err, query.ErrNotFound) {
		return nil, s.unavailable(ctx, "conversation", err)
	}
	out := &reportingv1.Conversation{TraceIds: t.TraceIDs}
	if t.Next != nil {
		out.NextPageToken = t.Next.Encode()
	}
	if d != nil {
		out.Summary = summary(d.Summary)
		r := d.Row
		out.Variables = r.Variables
		out.Tags, out.Labels, out.Flagged = r.Tags, r.Labels, r.Flagged
		out.CostMicros, out.Tokens = r.CostMicros, r.InputTokens+r.OutputTokens
		out.InputTokens, out.OutputTokens = r.InputTokens, r.OutputTokens
		out.FlowsStarted, out.FlowsCompleted, out.FlowDrops = r.FlowsStarted, r.FlowsCompleted, r.FlowDrops
		out.Leads, out.PageUrls, out.Agents, out.Markers = r.Leads, r.PageURLs, r.Agents, r.Markers
		out.TakeoverAt = ts(r.TakeoverAt)
		out.FirstResponseMs = r.FirstResponseMS
		if r.ResponseCount > 0 {
			out.AverageResponseMs = uint32(r.ResponseMSSum / uint64(r.ResponseCount))
		}
		if r.BotResponseCount > 0 {
			out.BotAverageResponseMs = uint32(r.BotResponseMSSum / uint64(r.BotResponseCount))
		}
		out.DebugEnabled, out.StartPageUrl, out.Referrer = r.DebugEnabled, r.StartPageURL, r.Referrer
		out.VariableDetails = variableDetails(r)
		table, err := s.priceTable(ctx, a.tenant, r)
		if err != nil {
			return nil, err
		}
		out.Usage, out.CostByCurrency, out.Currency = usage(prices.Apply(r.UsageLines(), table))
		out.CostMicros = 0
		if out.Currency != "" {
			out.CostMicros = out.CostByCurrency[0].CostMicros
		}
	} else {
		// Events are projected but the conversations row is not there yet.
		out.Summary = &reportingv1.ConversationSummary{ConversationId: a.conv, StartedAt: ts(t.FirstEventAt), LastActivityAt: ts(t.LastEventAt)}
	}
	facts, err := s.d.Reader.Facts(ctx, a.tenant, a.conv)
	if err != nil {
		return nil, s.unavailable(ctx, "conversation facts", err)
	}
	for _, d := range facts.DebugTraces {
		out.DebugTraces = append(out.DebugTraces, &reportingv1.DebugTrace{
			MessageId: d.Trace.GetMessageId(), OccurredAt: timestamppb.New(d.OccurredAt), Steps: d.Trace.GetSteps()})
	}
	for _, l := range facts.Leads {
		out.LeadRecords = append(out.LeadRecords, leadProto(l))
	}
	for _, m := range t.Messages {
		out.Messages = append(out.Messages, &reportingv1.Message{
			EventId: m.EventID, MessageId: m.MessageID, Role: projector.RoleFromName(m.Role), Text: m.Text,
			OccurredAt: timestamppb.New(m.OccurredAt), Intent: m.Intent, IntentConfidence: float64(m.IntentConfidence),
			Unidentified: m.Unidentified, FlowId: m.FlowID, NodeId: m.NodeID, AgentId: m.AgentID, ResponseTimeMs: m.ResponseTimeMS,
		})
	}
	if a.shared {
		sharedView(out)
		return out, nil
	}
	s.attachShareLink(ctx, a, out)
	return out, nil
}

// sharedView strips what a share link's viewer must not see: variables
// (anything the bot stored, often personal data), lead records (contact
// details), the visitor token (which identifies the visitor across
// conversations), trace ids, event ids and debug traces (ways into the
// platform's logs, event stream and bot internals), the page URLs visited
// and the referrer (their query strings carry personal data) and agents'
// internal ids.
func sharedView(c *reportingv1.Conversation) {
	c.Variables, c.TraceIds, c.PageUrls, c.Agents = nil, nil, nil, nil
	c.VariableDetails, c.LeadRecords, c.DebugTraces = nil, nil, nil
	c.StartPageUrl, c.Referrer = "", ""
	if c.Summary != nil {
		c.Summary.VisitorToken = ""
	}
	for _, m := range c.Messages {
		m.EventId, m.AgentId = "", ""
	}
}

// attachShareLink adds the caller key's share link to out, minting one when
// needed. Without a recorded link there is no share URL (logged): the rest
// of the conversation is still worth returning.
func (s *Server) attachShareLink(ctx context.Context, a access, out *reportingv1.Conversation) {
	if s.d.Signer == nil || s.d.Links == nil {
		return
	}
	l, err := s.d.Links.Mint(ctx, a.tenant, a.conv, a.keyID, s.d.Now(), s.d.ShareTTL)
	if err != nil {
		s.d.Log.WarnContext(ctx, "share link not minted", "err", err)
		return
	}
	tok := s.d.Signer.Sign(share.Grant{Tenant: l.TenantID, Conversation: l.ConversationID, LinkID: l.ID, Expires: l.ExpiresAt})
	out.ShareUrl = strings.TrimRight(s.d.ShareBaseURL, "/") + "/v1/shared/" + url.PathEscape(tok)
	out.ShareExpiresAt = timestamppb.New(l.ExpiresAt)
	out.ShareLinkId = l.ID
}

// conversationAccess authorizes GetConversation: an API key with the read
// scope (any conversation of its tenant), or a valid, unrevoked share token
// (that conversation only).
func (s *Server) conversationAccess(ctx context.Context, req *reportingv1.GetConversationRequest) (access, error) {
	if tok := req.GetShareToken(); tok != "" {
		return s.shareAccess(ctx, tok, req.GetConversationId())
	}
	p, ok := grpcx.PrincipalFrom(ctx)
	if !ok {
		return access{}, status.Error(codes.Unauthenticated, "missing API key or share token")
	}
	if p.Platform() {
		return access{}, status.Error(codes.PermissionDenied, "platform keys read no tenant's conversations")
	}
	if !eventbus.ValidConversationID(req.GetConversationId()) {
		return access{}, grpcx.Invalid("conversation_id", "required; 1-128 characters of A-Z a-z 0-9 _ -")
	}
	return access{tenant: p.TenantID, conv: req.GetConversationId(), keyID: p.KeyID}, nil
}

func (s *Server) shareAccess(ctx context.Context, tok, conv string) (access, error) {
	if s.d.Signer == nil || s.d.Links == nil {
		return access{}, grpcx.FailedPrecondition("SHARE_LINKS_DISABLED", "share_token", "share links are not enabled")
	}
	g, err := s.d.Signer.Verify(tok, s.d.Now())
	switch {
	case errors.Is(err, share.ErrExpired):
		return access{}, status.Errorf(codes.PermissionDenied, "share link expired at %s", g.Expires.Format(time.RFC3339))
	case err != nil:
		return access{}, status.Error(codes.Unauthenticated, "invalid share link")
	case conv != "" && conv != g.Conversation:
		return access{}, status.Error(codes.PermissionDenied, "the share link is for another conversation")
	}
	if p, ok := grpcx.PrincipalFrom(ctx); ok && p.TenantID != g.Tenant {
		return access{}, status.Error(codes.PermissionDenied, "the share link belongs to another tenant")
	}
	_, err = s.d.Links.Check(ctx, g.Tenant, g.LinkID)
	switch {
	case errors.Is(err, sharelinks.ErrRevoked):
		return access{}, status.Error(codes.PermissionDenied, "share link revoked")
	case errors.Is(err, sharelinks.ErrNotFound):
		return access{}, status.Error(codes.Unauthenticated, "invalid share link")
	case err != nil:
		s.d.Log.ErrorContext(ctx, "share link check failed", "err", err)
		return access{}, grpcx.Unavailable("share links cannot be checked right now; retry later")
	}
	return access{tenant: g.Tenant, conv: g.Conversation, shared: true}, nil
}

// variableDetails are the variables with their sources, sorted by key.
func variableDetails(r *convstate.State) []*reportingv1.Variable {
	keys := make([]string, 0, len(r.Variables))
	for k := range r.Variables {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*reportingv1.Variable, len(keys))
	for i, k := range keys {
		src := eventv1.VariableSource(eventv1.VariableSource_value["VARIABLE_SOURCE_"+strings.ToUpper(r.VariableSources[k])])
		out[i] = &reportingv1.Variable{Key: k, Value: r.Variables[k], Source: src}
	}
	return out
}

// priceTable is the tenant's model price table when the conversation has
// usage without a cost (nil otherwise: no query).
func (s *Server) priceTable(ctx context.Context, tenant string, r *convstate.State) ([]prices.Price, error) {
	if s.d.Prices == nil || !slices.ContainsFunc(r.UsageLines(), func(u convstate.Usage) bool { return u.CostMicros == 0 }) {
		return nil, nil
	}
	table, err := s.d.Prices.List(ctx, tenant)
	if err != nil {
		s.d.Log.ErrorContext(ctx, "model prices not read", "err", err)
		return nil, grpcx.Unavailable("model prices cannot be read right now; retry later")
	}
	return table, nil
}

// usage is the usage per model and currency, the cost per currency (first
// seen first), and the currency of the conversation's total when there is
// one.
func usage(priced []prices.Priced) (lines []*reportingv1.ModelUsage, byCurrency []*reportingv1.CurrencyCost, currency string) {
	for _, l := range priced {
		lines = append(lines, &reportingv1.ModelUsage{Model: l.Model, Currency: l.Currency, CostMicros: l.CostMicros,
			InputTokens: l.InputTokens, OutputTokens: l.OutputTokens, CostEstimated: l.Estimated})
		i := slices.IndexFunc(byCurrency, func(c *reportingv1.CurrencyCost) bool { return c.Currency == l.Currency })
		if i < 0 {
			byCurrency = append(byCurrency, &reportingv1.CurrencyCost{Currency: l.Currency})
			i = len(byCurrency) - 1
		}
		byCurrency[i].CostMicros += l.CostMicros
	}
	if len(byCurrency) == 1 {
		currency = byCurrency[0].Currency
	}
	return lines, byCurrency, currency
}

// leadProto is one lead record as the API returns it.
func leadProto(l query.Lead) *reportingv1.Lead {
	return &reportingv1.Lead{ConversationId: l.ConversationID,
		LeadId: l.Lead.GetLeadId(), Name: l.Lead.GetName(), Email: l.Lead.GetEmail(), Phone: l.Lead.GetPhone(),
		Fields: l.Lead.GetFields(), CapturedAt: timestamppb.New(l.OccurredAt), MessageId: l.Lead.GetMessageId()}
}
