package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/tenancy"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest/internal/mask"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Dry runs try at most this many recent messages.
const (
	DefaultDryRunLimit = 20
	MaxDryRunLimit     = 100
)

// MaskingStore stores tenants' masking rules (libs/tenancy).
type MaskingStore interface {
	MaskingRules(ctx context.Context, tenantID string) ([]tenancy.MaskingRule, error)
	PutMaskingRule(ctx context.Context, tenantID string, r tenancy.MaskingRule, maxRules int) (bool, error)
	DeleteMaskingRule(ctx context.Context, tenantID, ruleID string) (bool, error)
}

// StoredMessage is a message_posted event read back from the event log.
type StoredMessage struct {
	Sequence uint64
	Envelope *eventv1.Envelope
}

// RecentMessages reads a tenant's most recent stored messages, oldest first.
type RecentMessages interface {
	RecentMessages(ctx context.Context, tenantID string, n int) ([]StoredMessage, error)
}

// MaskingServer implements ingestv1.MaskingServiceServer.
type MaskingServer struct {
	ingestv1.UnimplementedMaskingServiceServer
	store  MaskingStore
	rules  *mask.Cache
	recent RecentMessages
	log    Logger
}

// NewMaskingServer returns the server; rules is the cache ingest applies
// (a change here drops the tenant's entry at once).
func NewMaskingServer(store MaskingStore, rules *mask.Cache, recent RecentMessages, log Logger) *MaskingServer {
	return &MaskingServer{store: store, rules: rules, recent: recent, log: log}
}

// MaskingScopes lists the scope of each MaskingService method: admin.
func MaskingScopes() map[string]string {
	return grpcx.MethodScopes(ingestv1.MaskingService_ServiceDesc, grpcx.ScopeAdmin, nil)
}

// MaskingReads marks the MaskingService methods that change nothing (the
// audit log records the others, which need the admin scope).
func MaskingReads() map[string]bool {
	return map[string]bool{
		ingestv1.MaskingService_ListMaskingRules_FullMethodName:  false,
		ingestv1.MaskingService_DryRunMaskingRule_FullMethodName: false,
	}
}

// MaskSource adapts a MaskingStore to mask.Source.
type MaskSource struct{ Store MaskingStore }

// MaskingRules implements mask.Source.
func (s MaskSource) MaskingRules(ctx context.Context, tenantID string) ([]mask.Rule, error) {
	stored, err := s.Store.MaskingRules(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	out := make([]mask.Rule, len(stored))
	for i, r := range stored {
		out[i] = mask.Rule{ID: r.ID, Detector: r.Detector, Pattern: r.Pattern, Action: r.Action}
	}
	return out, nil
}

func ruleOf(r *ingestv1.MaskingRule) (mask.Rule, error) {
	if r == nil {
		return mask.Rule{}, grpcx.Invalid("rule", "required")
	}
	m := mask.Rule{ID: r.GetId(), Detector: r.GetDetector(), Pattern: r.GetPattern(), Action: r.GetAction()}
	if v := mask.Check(m); v != nil {
		return m, grpcx.Invalid(v.Field, v.Description)
	}
	return m, nil
}

func (s *MaskingServer) unavailable(ctx context.Context, what string, err error) error {
	s.log.ErrorContext(ctx, what, "err", err)
	return grpcx.Unavailable("masking rules unavailable (database); retry later")
}

// ListMaskingRules implements the RPC.
func (s *MaskingServer) ListMaskingRules(ctx context.Context, _ *ingestv1.ListMaskingRulesRequest) (*ingestv1.ListMaskingRulesResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	rules, err := s.store.MaskingRules(ctx, p.TenantID)
	if err != nil {
		return nil, s.unavailable(ctx, "listing masking rules", err)
	}
	out := &ingestv1.ListMaskingRulesResponse{}
	for _, r := range rules {
		out.Rules = append(out.Rules, &ingestv1.MaskingRule{Id: r.ID, Detector: r.Detector, Pattern: r.Pattern, Action: r.Action, UpdatedAt: timestamppb.New(r.UpdatedAt)})
	}
	return out, nil
}

// PutMaskingRule implements the RPC.
func (s *MaskingServer) PutMaskingRule(ctx context.Context, req *ingestv1.PutMaskingRuleRequest) (*ingestv1.MaskingRule, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	r, err := ruleOf(req.GetRule())
	if err != nil {
		return nil, err
	}
	ok, err := s.store.PutMaskingRule(ctx, p.TenantID, tenancy.MaskingRule{ID: r.ID, Detector: r.Detector, Pattern: r.Pattern, Action: r.Action}, mask.MaxRules)
	if errors.Is(err, tenancy.ErrNotFound) {
		return nil, grpcx.NotFound("tenant %s not found", p.TenantID)
	}
	if err != nil {
		return nil, s.unavailable(ctx, "storing a masking rule", err)
	}
	if !ok {
		return nil, grpcx.Invalid("rule.id", fmt.Sprintf("a tenant has at most %d masking rules; delete one first", mask.MaxRules))
	}
	s.rules.Forget(p.TenantID)
	out := req.GetRule()
	out.UpdatedAt = timestamppb.Now()
	return out, nil
}

// DeleteMaskingRule implements the RPC.
func (s *MaskingServer) DeleteMaskingRule(ctx context.Context, req *ingestv1.DeleteMaskingRuleRequest) (*ingestv1.DeleteMaskingRuleResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetId() == "" {
		return nil, grpcx.Invalid("id", "required")
	}
	found, err := s.store.DeleteMaskingRule(ctx, p.TenantID, req.GetId())
	if err != nil {
		return nil, s.unavailable(ctx, "deleting a masking rule", err)
	}
	if !found {
		return nil, grpcx.NotFound("no masking rule %q", req.GetId())
	}
	s.rules.Forget(p.TenantID)
	return &ingestv1.DeleteMaskingRuleResponse{}, nil
}

// DryRunMaskingRule implements the RPC: it applies the rule alone to the
// text of the tenant's most recent messages and reports the differences.
func (s *MaskingServer) DryRunMaskingRule(ctx context.Context, req *ingestv1.DryRunMaskingRuleRequest) (*ingestv1.DryRunMaskingRuleResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	r, err := ruleOf(req.GetRule())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	switch {
	case limit < 0 || limit > MaxDryRunLimit:
		return nil, grpcx.Invalid("limit", fmt.Sprintf("0 (default %d) to %d", DefaultDryRunLimit, MaxDryRunLimit))
	case limit == 0:
		limit = DefaultDryRunLimit
	}
	set, err := mask.Compile([]mask.Rule{r}, s.rules.HashKey(p.TenantID))
	if err != nil {
		return nil, grpcx.Invalid("rule", err.Error())
	}
	msgs, err := s.recent.RecentMessages(ctx, p.TenantID, limit)
	if err != nil {
		s.log.ErrorContext(ctx, "dry run: reading recent messages", "err", err)
		return nil, grpcx.Unavailable("event log unavailable; retry later")
	}
	out := &ingestv1.DryRunMaskingRuleResponse{Examined: int32(len(msgs))}
	for _, m := range msgs {
		before := m.Envelope.GetMessagePosted().GetText()
		after, _ := set.String(before)
		if after != before {
			out.Changes = append(out.Changes, &ingestv1.MaskingChange{ConversationId: m.Envelope.GetConversationId(), EventId: m.Envelope.GetEventId(),
				StreamSequence: m.Sequence, Before: before, After: after})
		}
	}
	return out, nil
}
