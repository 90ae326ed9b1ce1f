// Package api is tagging's gRPC adapter: rules (create, update,
// enable/disable, delete, list, test, backfill), manual labels and flags,
// and the built-in detectors' settings. Every call is scoped to the caller's
// tenant (grpcx.RequireTenant): one tenant's rules never see or touch
// another's conversations.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/rules"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging/internal/backfill"
	"github.com/parley-dev/parley/services/tagging/internal/consumer"
	"github.com/parley-dev/parley/services/tagging/internal/derive"
	"github.com/parley-dev/parley/services/tagging/internal/preview"
	"github.com/parley-dev/parley/services/tagging/internal/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Publisher appends an event to the log.
type Publisher interface {
	Publish(ctx context.Context, env *eventv1.Envelope) (eventbus.PubAck, error)
}

// Deps are what the server needs.
type Deps struct {
	Store    *store.Store
	Engine   *rules.Engine
	Bus      Publisher
	Backfill *backfill.Backfiller
	Preview  *preview.Previewer
	// Detectors are the service-wide detector defaults.
	Detectors facts.Settings
	// Kick asks the outbox relay to publish (after DeleteRule).
	Kick func()
	// MaxConcurrentBackfills bounds backfills running at once; more wait.
	MaxConcurrentBackfills int
	// MaxBackfillsPerTenant bounds one tenant's backfills running or
	// waiting at once (1 when 0); more are refused, so that one tenant
	// cannot take every slot.
	MaxBackfillsPerTenant int
	// MaxRulesPerTenant bounds a tenant's rules (no limit when 0).
	MaxRulesPerTenant int
	Log               *slog.Logger
	Now               func() time.Time
}

// Server implements taggingv1.TaggingServiceServer.
type Server struct {
	taggingv1.UnimplementedTaggingServiceServer
	d         Deps
	backfills chan struct{}
	mu        sync.Mutex
	// tenantBackfills counts each tenant's backfills running or waiting.
	tenantBackfills map[string]int
}

// New returns a server.
func New(d Deps) *Server {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Kick == nil {
		d.Kick = func() {}
	}
	if d.MaxConcurrentBackfills <= 0 {
		d.MaxConcurrentBackfills = 2
	}
	if d.MaxBackfillsPerTenant <= 0 {
		d.MaxBackfillsPerTenant = 1
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{d: d, backfills: make(chan struct{}, d.MaxConcurrentBackfills), tenantBackfills: map[string]int{}}
}

// Scopes lists the API-key scope each method needs: reads need "read";
// creating, changing, testing, previewing and backfilling rules need "rules"; labels,
// flags and detector settings need "admin" (admin implies every scope).
func Scopes() map[string]string {
	return grpcx.MethodScopes(taggingv1.TaggingService_ServiceDesc, grpcx.ScopeAdmin, map[string]string{
		"ListRules": grpcx.ScopeRead, "ListLabels": grpcx.ScopeRead, "GetDetectors": grpcx.ScopeRead,
		"CreateRule": grpcx.ScopeRules, "UpdateRule": grpcx.ScopeRules, "SetRuleEnabled": grpcx.ScopeRules, "DeleteRule": grpcx.ScopeRules,
		"TestRule": grpcx.ScopeRules, "Backfill": grpcx.ScopeRules, "PreviewRule": grpcx.ScopeRules,
	})
}

var (
	idRe  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	tagRe = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9 _:-]{0,62}[a-z0-9_:-])?$`)
)

// Limits on rule and label fields.
const (
	maxNameRunes        = 100
	maxDescriptionRunes = 1000
	maxLabelRunes       = 64
	maxByRunes          = 200
	maxNoteRunes        = 2000
	// maxLongWait bounds the long-wait detector's threshold.
	maxLongWait = 30 * 24 * time.Hour
)

// CreateRule stores a new, enabled rule (version 1), created by the
// caller's API key. The rule id is the client's (1-64 of A-Z a-z 0-9 _ -) or
// a new UUID. A tenant has at most MaxRulesPerTenant rules.
func (s *Server) CreateRule(ctx context.Context, req *taggingv1.CreateRuleRequest) (*taggingv1.Rule, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	r := req.GetRule()
	if r == nil {
		return nil, grpcx.Invalid("rule", "required")
	}
	id := r.GetRuleId()
	if id == "" {
		id = eventbus.NewEventID()
	} else if !idRe.MatchString(id) {
		return nil, grpcx.Invalid("rule.rule_id", "1-64 characters of A-Z a-z 0-9 _ - (or empty for a generated id)")
	}
	if err := s.checkRule(r); err != nil {
		return nil, err
	}
	stored, err := s.d.Store.CreateRule(ctx, store.Rule{
		TenantID: p.TenantID, RuleID: id, Name: r.GetName(), Expression: r.GetExpression(), Tag: r.GetTag(),
		Description: r.GetDescription(), Enabled: true, CreatedBy: actor(p),
	}, s.d.MaxRulesPerTenant)
	if errors.Is(err, store.ErrExists) {
		return nil, status.Errorf(codes.AlreadyExists, "rule %s already exists", id)
	}
	if errors.Is(err, store.ErrTooManyRules) {
		return nil, grpcx.ResourceExhausted(fmt.Sprintf("the tenant has %d rules, the most allowed (PARLEY_TAGGING_MAX_RULES_PER_TENANT); "+
			"delete or reuse one", s.d.MaxRulesPerTenant), 0)
	}
	if err != nil {
		return nil, s.fail(ctx, "create rule", err)
	}
	return ruleProto(stored), nil
}

// UpdateRule replaces a rule's name, expression, tag and description (all
// validated as in CreateRule); a change bumps its version and records the
// caller's API key as updated_by. Enabled is kept.
func (s *Server) UpdateRule(ctx context.Context, req *taggingv1.UpdateRuleRequest) (*taggingv1.Rule, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	r := req.GetRule()
	if r == nil {
		return nil, grpcx.Invalid("rule", "required")
	}
	if r.GetRuleId() == "" {
		return nil, grpcx.Invalid("rule.rule_id", "required")
	}
	if err := s.checkRule(r); err != nil {
		return nil, err
	}
	stored, err := s.d.Store.UpdateRule(ctx, p.TenantID, r.GetRuleId(), actor(p), func(cur *store.Rule) (bool, error) {
		changed := cur.Name != r.GetName() || cur.Expression != r.GetExpression() || cur.Tag != r.GetTag() || cur.Description != r.GetDescription()
		cur.Name, cur.Expression, cur.Tag, cur.Description = r.GetName(), r.GetExpression(), r.GetTag(), r.GetDescription()
		return changed, nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFoundRule(r.GetRuleId())
	}
	if err != nil {
		return nil, s.fail(ctx, "update rule", err)
	}
	return ruleProto(stored), nil
}

// SetRuleEnabled enables or disables a rule; a change bumps its version. A
// disabled rule applies no new tags; the tags it applied stay.
func (s *Server) SetRuleEnabled(ctx context.Context, req *taggingv1.SetRuleEnabledRequest) (*taggingv1.Rule, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetRuleId() == "" {
		return nil, grpcx.Invalid("rule_id", "required")
	}
	stored, err := s.d.Store.UpdateRule(ctx, p.TenantID, req.GetRuleId(), actor(p), func(cur *store.Rule) (bool, error) {
		changed := cur.Enabled != req.GetEnabled()
		cur.Enabled = req.GetEnabled()
		return changed, nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFoundRule(req.GetRuleId())
	}
	if err != nil {
		return nil, s.fail(ctx, "enable rule", err)
	}
	return ruleProto(stored), nil
}

// DeleteRule deletes a rule and removes its tags (TagRemoved, source RULE,
// for each conversation no other rule or detector tags the same way).
func (s *Server) DeleteRule(ctx context.Context, req *taggingv1.DeleteRuleRequest) (*taggingv1.DeleteRuleResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetRuleId() == "" {
		return nil, grpcx.Invalid("rule_id", "required")
	}
	now := s.d.Now()
	corr := eventbus.NewEventID()
	n, err := s.d.Store.DeleteRule(ctx, p.TenantID, req.GetRuleId(), func(a store.Applied) *eventv1.Envelope {
		return derive.TagRemoved(p.TenantID, a.ConversationID, a.EventID, a.RuleID, a.Tag, eventv1.TagSource_TAG_SOURCE_RULE, corr, now)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFoundRule(req.GetRuleId())
	}
	if err != nil {
		return nil, s.fail(ctx, "delete rule", err)
	}
	if n > 0 {
		s.d.Kick()
	}
	return &taggingv1.DeleteRuleResponse{}, nil
}

// ListRules lists the tenant's rules, oldest first.
func (s *Server) ListRules(ctx context.Context, _ *taggingv1.ListRulesRequest) (*taggingv1.ListRulesResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := s.d.Store.ListRules(ctx, p.TenantID)
	if err != nil {
		return nil, s.fail(ctx, "list rules", err)
	}
	out := &taggingv1.ListRulesResponse{}
	for _, r := range rs {
		out.Rules = append(out.Rules, ruleProto(r))
	}
	return out, nil
}

// TestRule evaluates an expression against a conversation's current facts,
// with `event` bound to the conversation's last event.
func (s *Server) TestRule(ctx context.Context, req *taggingv1.TestRuleRequest) (*taggingv1.TestRuleResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	prg, err := s.compile("expression", req.GetExpression())
	if err != nil {
		return nil, err
	}
	if !eventbus.ValidConversationID(req.GetConversationId()) {
		return nil, grpcx.Invalid("conversation_id", "required; 1-128 characters of A-Z a-z 0-9 _ -")
	}
	st, err := s.d.Store.ConversationState(ctx, p.TenantID, req.GetConversationId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFoundConversation(req.GetConversationId())
	}
	if err != nil {
		return nil, s.fail(ctx, "test rule", err)
	}
	out := &taggingv1.TestRuleResponse{Conversation: st.Facts}
	out.Matched, err = prg.Eval(ctx, rules.NewInput(st.Facts, st.LastEvent))
	if err != nil {
		out.EvaluationError = err.Error()
	}
	return out, nil
}

// AddLabel attaches a label, adding it to the tenant's catalogue on first
// use, and appends LabelAdded.
func (s *Server) AddLabel(ctx context.Context, req *taggingv1.AddLabelRequest) (*taggingv1.LabelResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkCommand(ctx, p.TenantID, req.GetConversationId()); err != nil {
		return nil, err
	}
	if err := checkLabel(req.GetLabel()); err != nil {
		return nil, err
	}
	by, err := who(p, req.GetBy())
	if err != nil {
		return nil, err
	}
	if err := s.d.Store.EnsureLabel(ctx, p.TenantID, req.GetLabel(), by); err != nil {
		return nil, s.fail(ctx, "add label", err)
	}
	id, err := s.publish(ctx, p.TenantID, req.GetConversationId(), &eventv1.LabelAdded{Label: req.GetLabel(), AddedBy: by})
	if err != nil {
		return nil, err
	}
	return &taggingv1.LabelResponse{EventId: id}, nil
}

// RemoveLabel detaches a catalogue label (NotFound for a label the
// catalogue does not have) and appends LabelRemoved.
func (s *Server) RemoveLabel(ctx context.Context, req *taggingv1.RemoveLabelRequest) (*taggingv1.LabelResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkCommand(ctx, p.TenantID, req.GetConversationId()); err != nil {
		return nil, err
	}
	if err := checkLabel(req.GetLabel()); err != nil {
		return nil, err
	}
	by, err := who(p, req.GetBy())
	if err != nil {
		return nil, err
	}
	ok, err := s.d.Store.LabelExists(ctx, p.TenantID, req.GetLabel())
	if err != nil {
		return nil, s.fail(ctx, "remove label", err)
	}
	if !ok {
		return nil, grpcx.NotFound("label %q is not in the catalogue", req.GetLabel())
	}
	id, err := s.publish(ctx, p.TenantID, req.GetConversationId(), &eventv1.LabelRemoved{Label: req.GetLabel(), RemovedBy: by})
	if err != nil {
		return nil, err
	}
	return &taggingv1.LabelResponse{EventId: id}, nil
}

// Flag marks a conversation for review and appends Flagged.
func (s *Server) Flag(ctx context.Context, req *taggingv1.FlagRequest) (*taggingv1.FlagResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	by, err := s.checkFlag(ctx, p, req.GetConversationId(), req.GetBy(), req.GetNote())
	if err != nil {
		return nil, err
	}
	id, err := s.publish(ctx, p.TenantID, req.GetConversationId(), &eventv1.Flagged{FlaggedBy: by, Note: req.GetNote()})
	if err != nil {
		return nil, err
	}
	return &taggingv1.FlagResponse{EventId: id}, nil
}

// Unflag clears the review flag and appends Unflagged.
func (s *Server) Unflag(ctx context.Context, req *taggingv1.UnflagRequest) (*taggingv1.FlagResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	by, err := s.checkFlag(ctx, p, req.GetConversationId(), req.GetBy(), req.GetNote())
	if err != nil {
		return nil, err
	}
	id, err := s.publish(ctx, p.TenantID, req.GetConversationId(), &eventv1.Unflagged{UnflaggedBy: by, Note: req.GetNote()})
	if err != nil {
		return nil, err
	}
	return &taggingv1.FlagResponse{EventId: id}, nil
}

// Backfill applies a rule to the tenant's history, streaming progress.
func (s *Server) Backfill(req *taggingv1.BackfillRequest, stream grpc.ServerStreamingServer[taggingv1.BackfillProgress]) error {
	ctx := stream.Context()
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return err
	}
	if req.GetRuleId() == "" {
		return grpcx.Invalid("rule_id", "required")
	}
	release, err := s.slot(ctx, p.TenantID)
	if err != nil {
		return err
	}
	defer release()
	err = s.d.Backfill.Run(ctx, p.TenantID, req.GetRuleId(), stream.Send)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return notFoundRule(req.GetRuleId())
	case errors.Is(err, backfill.ErrDisabled):
		return grpcx.FailedPrecondition("RULE_DISABLED", "rule/"+req.GetRuleId(),
			fmt.Sprintf("rule %s is disabled; enable it to backfill (DeleteRule removes its tags)", req.GetRuleId()))
	case errors.Is(err, backfill.ErrNotCompilable):
		s.d.Log.ErrorContext(ctx, "backfill of a stored rule that does not compile", "tenant_id", p.TenantID, "rule_id", req.GetRuleId(), "err", err)
		return grpcx.FailedPrecondition("RULE_INVALID", "rule/"+req.GetRuleId(),
			fmt.Sprintf("rule %s no longer compiles or exceeds the cost limit; update its expression", req.GetRuleId()))
	case errors.Is(err, store.ErrRuleChanged):
		return status.Errorf(codes.Aborted, "rule %s changed during the backfill; run it again (what was done stays correct)", req.GetRuleId())
	case errors.Is(err, backfill.ErrTooLarge):
		return grpcx.ResourceExhausted("the tenant's history has more conversations than one backfill may hold; raise PARLEY_TAGGING_BACKFILL_MAX_CONVERSATIONS", 0)
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case status.Code(err) != codes.Unknown:
		return err // the stream's own error
	default:
		return s.fail(ctx, "backfill", err)
	}
}

// PreviewRule replays the conversations of the last days (1-90, default 7)
// against a candidate expression and counts those that would gain or lose
// the rule's tag. It takes one of the tenant's backfill slots, as a backfill
// does, and changes nothing.
func (s *Server) PreviewRule(ctx context.Context, req *taggingv1.PreviewRuleRequest) (*taggingv1.PreviewRuleResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if id := req.GetRuleId(); id != "" && !idRe.MatchString(id) {
		return nil, grpcx.Invalid("rule_id", "1-64 characters of A-Z a-z 0-9 _ - (or empty for a new rule)")
	}
	prg, err := s.compile("expression", req.GetExpression())
	if err != nil {
		return nil, err
	}
	days := int(req.GetDays())
	if days == 0 {
		days = preview.DefaultDays
	}
	if days < 1 || days > preview.MaxDays {
		return nil, grpcx.Invalid("days", fmt.Sprintf("between 1 and %d; 0: %d", preview.MaxDays, preview.DefaultDays))
	}
	release, err := s.slot(ctx, p.TenantID)
	if err != nil {
		return nil, err
	}
	defer release()
	res, err := s.d.Preview.Run(ctx, preview.Request{Tenant: p.TenantID, RuleID: req.GetRuleId(), Program: prg, Days: days})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound):
		return nil, notFoundRule(req.GetRuleId())
	case errors.Is(err, preview.ErrTooLarge):
		return nil, grpcx.ResourceExhausted("the window holds more conversations than one replay may hold; preview fewer days "+
			"or raise PARLEY_TAGGING_BACKFILL_MAX_CONVERSATIONS", 0)
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, eventbus.ErrUnavailable):
		s.d.Log.WarnContext(ctx, "preview failed", "tenant_id", p.TenantID, "err", err)
		return nil, grpcx.Unavailable("event log unavailable; retry")
	default:
		return nil, s.fail(ctx, "preview rule", err)
	}
	return &taggingv1.PreviewRuleResponse{
		Since: timestamppb.New(res.Since), RuleVersion: res.RuleVersion,
		ConversationsScanned: res.Scanned, ConversationsMatched: res.Matched, Gained: res.Gained, Lost: res.Lost,
		GainedSample: res.GainedSample, LostSample: res.LostSample, EventsScanned: res.Events,
	}, nil
}

// slot takes one of the tenant's backfill slots, then waits for one of the
// service's; release gives both back. Backfills and previews share them.
func (s *Server) slot(ctx context.Context, tenant string) (release func(), err error) {
	rel, ok := s.tenantSlot(tenant)
	if !ok {
		return nil, grpcx.ResourceExhausted(fmt.Sprintf("the tenant already has %d backfills or previews running or waiting, the most allowed "+
			"(PARLEY_TAGGING_MAX_BACKFILLS_PER_TENANT); retry when one finished", s.d.MaxBackfillsPerTenant), 10*time.Second)
	}
	select {
	case s.backfills <- struct{}{}:
		return func() { <-s.backfills; rel() }, nil
	case <-ctx.Done():
		rel()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// tenantSlot takes one of the tenant's backfill slots; ok is false when it
// has none left.
func (s *Server) tenantSlot(tenant string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tenantBackfills[tenant] >= s.d.MaxBackfillsPerTenant {
		return nil, false
	}
	s.tenantBackfills[tenant]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.tenantBackfills[tenant]--; s.tenantBackfills[tenant] <= 0 {
			delete(s.tenantBackfills, tenant)
		}
	}, true
}

// ListLabels lists the label catalogue.
func (s *Server) ListLabels(ctx context.Context, _ *taggingv1.ListLabelsRequest) (*taggingv1.ListLabelsResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	ls, err := s.d.Store.ListLabels(ctx, p.TenantID)
	if err != nil {
		return nil, s.fail(ctx, "list labels", err)
	}
	out := &taggingv1.ListLabelsResponse{}
	for _, l := range ls {
		out.Labels = append(out.Labels, &taggingv1.Label{Label: l.Label, CreatedBy: l.CreatedBy, CreatedAt: timestamppb.New(l.CreatedAt)})
	}
	return out, nil
}

// GetDetectors returns the effective detector settings.
func (s *Server) GetDetectors(ctx context.Context, _ *taggingv1.GetDetectorsRequest) (*taggingv1.DetectorSettings, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	ds, err := s.d.Store.DetectorSettings(ctx, p.TenantID)
	if err != nil {
		return nil, s.fail(ctx, "get detectors", err)
	}
	return settingsProto(consumer.EffectiveDetectors(ds, s.d.Detectors)), nil
}

// UpdateDetectors replaces the tenant's detector settings (zero fields: the
// service defaults) and returns the effective ones. New settings apply to
// events tagged from then on.
func (s *Server) UpdateDetectors(ctx context.Context, req *taggingv1.UpdateDetectorsRequest) (*taggingv1.DetectorSettings, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	in := req.GetSettings()
	if in == nil {
		return nil, grpcx.Invalid("settings", "required")
	}
	fs := facts.Settings{Disabled: in.GetDisabled(), LongWait: time.Duration(in.GetLongWaitMs()) * time.Millisecond,
		RepeatWindow: int(in.GetRepeatWindow()), NegativePhrases: in.GetNegativePhrases()}
	if ms := in.GetLongWaitMs(); ms < 0 || ms > maxLongWait.Milliseconds() {
		// Larger values would overflow the duration: no wait could match.
		return nil, grpcx.Invalid("settings.long_wait_ms", fmt.Sprintf("between 0 and %d (%s); 0: the service default",
			maxLongWait.Milliseconds(), maxLongWait))
	}
	if field, problem := fs.Validate(); field != "" {
		return nil, grpcx.Invalid("settings."+field, problem)
	}
	ds := store.DetectorSettings{Disabled: slices.Clone(in.GetDisabled()), LongWaitMS: in.GetLongWaitMs(),
		RepeatWindow: int(in.GetRepeatWindow()), NegativePhrases: in.GetNegativePhrases()}
	if err := s.d.Store.SetDetectorSettings(ctx, p.TenantID, ds); err != nil {
		return nil, s.fail(ctx, "update detectors", err)
	}
	ds.Set = true
	return settingsProto(consumer.EffectiveDetectors(ds, s.d.Detectors)), nil
}

func settingsProto(s facts.Settings) *taggingv1.DetectorSettings {
	return &taggingv1.DetectorSettings{
		Disabled: slices.Clone(s.Disabled), LongWaitMs: s.LongWait.Milliseconds(),
		RepeatWindow: int64(s.RepeatWindow), NegativePhrases: slices.Clone(s.NegativePhrases),
	}
}

func (s *Server) checkRule(r *taggingv1.Rule) error {
	if err := checkText("rule.name", r.GetName(), 1, maxNameRunes, false); err != nil {
		return err
	}
	if !tagRe.MatchString(r.GetTag()) {
		return grpcx.Invalid("rule.tag", "1-64 characters of a-z 0-9 space _ : -, starting with a letter or digit and not ending with a space")
	}
	if err := checkText("rule.description", r.GetDescription(), 0, maxDescriptionRunes, true); err != nil {
		return err
	}
	_, err := s.compile("rule.expression", r.GetExpression())
	return err
}

func (s *Server) compile(field, expr string) (*rules.Program, error) {
	prg, err := s.d.Engine.Compile(expr)
	if err != nil {
		var ce *rules.CompileError
		if errors.As(err, &ce) {
			return nil, grpcx.Invalid(field, ce.Error())
		}
		return nil, grpcx.Invalid(field, err.Error())
	}
	return prg, nil
}

// checkCommand validates a label or flag command's conversation: it must be
// one tagging has seen (so a typo cannot open a phantom conversation).
func (s *Server) checkCommand(ctx context.Context, tenant, conv string) error {
	if !eventbus.ValidConversationID(conv) {
		return grpcx.Invalid("conversation_id", "required; 1-128 characters of A-Z a-z 0-9 _ -")
	}
	if _, err := s.d.Store.ConversationState(ctx, tenant, conv); errors.Is(err, store.ErrNotFound) {
		return notFoundConversation(conv)
	} else if err != nil {
		return s.fail(ctx, "load conversation", err)
	}
	return nil
}

func (s *Server) checkFlag(ctx context.Context, p grpcx.Principal, conv, by, note string) (string, error) {
	if err := s.checkCommand(ctx, p.TenantID, conv); err != nil {
		return "", err
	}
	if err := checkText("note", note, 0, maxNoteRunes, true); err != nil {
		return "", err
	}
	return who(p, by)
}

func (s *Server) publish(ctx context.Context, tenant, conv string, payload proto.Message) (string, error) {
	env := eventbus.NewEnvelope(tenant, conv, payload, eventbus.OccurredAt(s.d.Now()))
	if _, err := s.d.Bus.Publish(ctx, env); err != nil {
		s.d.Log.WarnContext(ctx, "append failed", "tenant_id", tenant, "conversation_id", conv, "err", err)
		if errors.Is(err, eventbus.ErrUnavailable) {
			return "", grpcx.Unavailable("event log unavailable; nothing was recorded, retry")
		}
		return "", grpcx.Internal("the event could not be appended; nothing was recorded")
	}
	return env.EventId, nil
}

func checkLabel(label string) error {
	if err := checkText("label", label, 1, maxLabelRunes, false); err != nil {
		return err
	}
	if strings.TrimSpace(label) != label {
		return grpcx.Invalid("label", "must not start or end with white space")
	}
	return nil
}

// who is the actor of a label or flag command: the caller's API key. The
// request's by (deprecated) is still checked, and otherwise ignored: a
// client cannot record a command in someone else's name.
func who(p grpcx.Principal, by string) (string, error) {
	if err := checkText("by", by, 0, maxByRunes, false); err != nil {
		return "", err
	}
	return actor(p), nil
}

// actor names the caller's API key as the one who did something.
func actor(p grpcx.Principal) string { return "api-key:" + p.KeyID }

// checkText requires valid UTF-8 of min..max characters without control
// characters (multi-line fields may have line breaks and tabs).
func checkText(field, v string, minRunes, maxRunes int, multiline bool) error {
	if !utf8.ValidString(v) {
		return grpcx.Invalid(field, "must be valid UTF-8")
	}
	n := utf8.RuneCountInString(v)
	if n < minRunes || n > maxRunes || (minRunes > 0 && strings.TrimSpace(v) == "") {
		if minRunes > 0 {
			return grpcx.Invalid(field, fmt.Sprintf("required; %d-%d characters", minRunes, maxRunes))
		}
		return grpcx.Invalid(field, fmt.Sprintf("at most %d characters", maxRunes))
	}
	if strings.IndexFunc(v, func(r rune) bool {
		return unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t'))
	}) >= 0 {
		return grpcx.Invalid(field, "must not contain control characters")
	}
	return nil
}

func ruleProto(r store.Rule) *taggingv1.Rule {
	return &taggingv1.Rule{
		RuleId: r.RuleID, Name: r.Name, Expression: r.Expression, Tag: r.Tag, Enabled: r.Enabled, Description: r.Description,
		CreatedAt: timestamppb.New(r.CreatedAt), UpdatedAt: timestamppb.New(r.UpdatedAt), Version: r.Version,
		CreatedBy: r.CreatedBy, UpdatedBy: r.UpdatedBy,
	}
}

func notFoundRule(id string) error { return grpcx.NotFound("rule %s not found", id) }

func notFoundConversation(id string) error {
	return grpcx.NotFound("conversation %s not found (tagging has not seen an event of it yet)", id)
}

// fail logs a dependency failure of op and answers the client without its
// text: Unavailable when retrying may help, Internal otherwise.
func (s *Server) fail(ctx context.Context, op string, err error) error {
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return status.Error(codes.Canceled, "cancelled")
	}
	if isDependency(err) {
		s.d.Log.WarnContext(ctx, op+" failed", "err", err)
		return grpcx.Unavailable("database unavailable; retry")
	}
	s.d.Log.ErrorContext(ctx, op+" failed", "err", err)
	return grpcx.Internal(op + " failed; the error is logged")
}

// isDependency reports failures of the database or the network that a retry
// may get past.
func isDependency(err error) bool {
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) || errors.As(err, &ce) || pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}
