// Package api is notification's gRPC API: subscriptions, the delivery log,
// replays, test events and transcripts.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/rules"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/notification/internal/alerts"
	"github.com/parley-dev/parley/services/notification/internal/consumer"
	"github.com/parley-dev/parley/services/notification/internal/delivery"
	"github.com/parley-dev/parley/services/notification/internal/store"
	"github.com/parley-dev/parley/services/notification/internal/webhook"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Limits on a subscription.
const (
	maxEmails    = 20
	maxNameBytes = 200
	maxKinds     = 64
	maxListLimit = 1000
)

// Deps are the server's dependencies.
type Deps struct {
	Store  *store.Store
	Bus    *eventbus.Bus
	Engine *rules.Engine
	Folder *consumer.Folder
	Policy webhook.Policy
	// Email tells whether a mailer is configured (email subscriptions and
	// transcripts need one).
	Email    bool
	RetryFor time.Duration
	// MaxSubscriptions bounds each tenant's subscriptions (0: no limit);
	// MaxAlertRules each tenant's alert rules.
	MaxSubscriptions, MaxAlertRules int
	// AlertStep is the alert windows' granularity.
	AlertStep time.Duration
	Kick      func()
	Log       *slog.Logger
}

// Server implements NotificationService.
type Server struct {
	notificationv1.UnimplementedNotificationServiceServer
	d Deps
}

// New returns the server.
func New(d Deps) *Server { return &Server{d: d} }

// fail maps a store error: not found, or an outage (logged, never shown).
func (s *Server) fail(ctx context.Context, what string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return grpcx.NotFound("%s not found", what)
	}
	if grpcx.IsSafe(err) {
		return err
	}
	s.d.Log.ErrorContext(ctx, "notification store", "what", what, "err", err)
	return grpcx.Unavailable("the notification store is unavailable; retry later")
}

func (s *Server) validate(ctx context.Context, p *notificationv1.Subscription, kind string) (*store.Subscription, error) {
	sub := &store.Subscription{Name: p.GetName(), Kind: kind, Condition: p.GetCondition(), OwnerEmail: p.GetOwnerEmail(), Alerts: p.GetAlerts(),
		Transcript: p.GetTranscript()}
	if len(sub.Name) > maxNameBytes {
		return nil, grpcx.Invalid("subscription.name", fmt.Sprintf("must be at most %d bytes", maxNameBytes))
	}
	switch kind {
	case "webhook":
		if why := s.d.Policy.CheckURL(p.GetTarget()); why != "" {
			return nil, grpcx.Invalid("subscription.target", why)
		}
		if len(p.GetEmails()) > 0 {
			return nil, grpcx.Invalid("subscription.emails", "only for kind \"email\"")
		}
		if p.GetTranscript() {
			return nil, grpcx.Invalid("subscription.transcript", "only for kind \"email\"")
		}
		sub.Target = p.GetTarget()
	case "email":
		if !s.d.Email {
			return nil, grpcx.FailedPrecondition("EMAIL_NOT_CONFIGURED", "notification", "email is not configured on this service")
		}
		if len(p.GetEmails()) == 0 || len(p.GetEmails()) > maxEmails {
			return nil, grpcx.Invalid("subscription.emails", fmt.Sprintf("must hold 1 to %d addresses", maxEmails))
		}
		for i, e := range p.GetEmails() {
			if !validEmail(e) {
				return nil, grpcx.Invalid(fmt.Sprintf("subscription.emails[%d]", i), "not an email address")
			}
		}
		if p.GetTarget() != "" {
			return nil, grpcx.Invalid("subscription.target", "only for kind \"webhook\"")
		}
		if p.GetTranscript() && len(p.GetEventKinds()) > 0 && !slices.Contains(p.GetEventKinds(), "conversation_ended") {
			return nil, grpcx.Invalid("subscription.transcript", "transcripts come with conversation_ended, which event_kinds leaves out")
		}
		sub.Emails = p.GetEmails()
	default:
		return nil, grpcx.Invalid("subscription.kind", `must be "webhook" or "email"`)
	}
	if sub.OwnerEmail != "" && !validEmail(sub.OwnerEmail) {
		return nil, grpcx.Invalid("subscription.owner_email", "not an email address")
	}
	if len(p.GetEventKinds()) > maxKinds {
		return nil, grpcx.Invalid("subscription.event_kinds", fmt.Sprintf("at most %d kinds", maxKinds))
	}
	for i, k := range p.GetEventKinds() {
		if !eventbus.IsKind(k) {
			return nil, grpcx.Invalid(fmt.Sprintf("subscription.event_kinds[%d]", i), "unknown event kind; one of "+strings.Join(eventbus.Kinds(), ", "))
		}
	}
	sub.EventKinds = p.GetEventKinds()
	if strings.TrimSpace(sub.Condition) != "" {
		if _, err := s.d.Engine.Compile(sub.Condition); err != nil {
			return nil, grpcx.Invalid("subscription.condition", err.Error())
		}
	}
	return sub, nil
}

func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && len(s) <= 254
}

// CreateSubscription implements NotificationService.
func (s *Server) CreateSubscription(ctx context.Context, req *notificationv1.CreateSubscriptionRequest) (*notificationv1.Subscription, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	kind := req.GetSubscription().GetKind()
	if kind == "" {
		kind = "webhook"
	}
	sub, err := s.validate(ctx, req.GetSubscription(), kind)
	if err != nil {
		return nil, err
	}
	sub.TenantID, sub.ID = p.TenantID, "sub_"+strings.ReplaceAll(eventbus.NewEventID(), "-", "")
	if kind == "webhook" {
		sub.Secret = webhook.NewSecret()
	}
	out, err := s.d.Store.CreateSubscription(ctx, sub, s.d.MaxSubscriptions)
	if errors.Is(err, store.ErrTooMany) {
		return nil, grpcx.ResourceExhausted(fmt.Sprintf("the tenant has %d subscriptions, the most allowed "+
			"(PARLEY_NOTIFICATION_MAX_SUBSCRIPTIONS_PER_TENANT); delete or reuse one", s.d.MaxSubscriptions), 0)
	}
	if err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	pb := toProto(out)
	pb.Secret = out.Secret
	return pb, nil
}

// GetSubscription implements NotificationService.
func (s *Server) GetSubscription(ctx context.Context, req *notificationv1.GetSubscriptionRequest) (*notificationv1.Subscription, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	sub, err := s.d.Store.Subscription(ctx, p.TenantID, req.GetSubscriptionId())
	if err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	return toProto(sub), nil
}

// UpdateSubscription implements NotificationService.
func (s *Server) UpdateSubscription(ctx context.Context, req *notificationv1.UpdateSubscriptionRequest) (*notificationv1.Subscription, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	cur, err := s.d.Store.Subscription(ctx, p.TenantID, req.GetSubscription().GetSubscriptionId())
	if err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	if k := req.GetSubscription().GetKind(); k != "" && k != cur.Kind {
		return nil, grpcx.Invalid("subscription.kind", "cannot be changed; create another subscription")
	}
	sub, err := s.validate(ctx, req.GetSubscription(), cur.Kind)
	if err != nil {
		return nil, err
	}
	sub.TenantID, sub.ID = p.TenantID, cur.ID
	out, err := s.d.Store.UpdateSubscription(ctx, sub)
	if err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	return toProto(out), nil
}

func (s *Server) setState(ctx context.Context, id, state string) (*notificationv1.Subscription, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.d.Store.SetState(ctx, p.TenantID, id, state)
	if err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	if state == store.StateActive && s.d.Kick != nil {
		s.d.Kick()
	}
	return toProto(out), nil
}

// PauseSubscription implements NotificationService.
func (s *Server) PauseSubscription(ctx context.Context, req *notificationv1.PauseSubscriptionRequest) (*notificationv1.Subscription, error) {
	return s.setState(ctx, req.GetSubscriptionId(), store.StatePaused)
}

// ResumeSubscription implements NotificationService.
func (s *Server) ResumeSubscription(ctx context.Context, req *notificationv1.ResumeSubscriptionRequest) (*notificationv1.Subscription, error) {
	return s.setState(ctx, req.GetSubscriptionId(), store.StateActive)
}

// ListSubscriptions implements NotificationService.
func (s *Server) ListSubscriptions(ctx context.Context, _ *notificationv1.ListSubscriptionsRequest) (*notificationv1.ListSubscriptionsResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	subs, err := s.d.Store.Subscriptions(ctx, p.TenantID)
	if err != nil {
		return nil, s.fail(ctx, "subscriptions", err)
	}
	out := &notificationv1.ListSubscriptionsResponse{}
	for _, sub := range subs {
		out.Subscriptions = append(out.Subscriptions, toProto(sub))
	}
	return out, nil
}

// DeleteSubscription implements NotificationService.
func (s *Server) DeleteSubscription(ctx context.Context, req *notificationv1.DeleteSubscriptionRequest) (*notificationv1.DeleteSubscriptionResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.d.Store.DeleteSubscription(ctx, p.TenantID, req.GetSubscriptionId()); err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	return &notificationv1.DeleteSubscriptionResponse{}, nil
}

// RotateSecret implements NotificationService.
func (s *Server) RotateSecret(ctx context.Context, req *notificationv1.RotateSecretRequest) (*notificationv1.RotateSecretResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	keep := time.Duration(req.GetPreviousValidSeconds()) * time.Second
	switch {
	case keep == 0:
		keep = 24 * time.Hour
	case keep > 7*24*time.Hour:
		return nil, grpcx.Invalid("previous_valid_seconds", "at most 604800 (7 days)")
	}
	secret, until := webhook.NewSecret(), time.Now().Add(keep)
	if err := s.d.Store.RotateSecret(ctx, p.TenantID, req.GetSubscriptionId(), secret, until); err != nil {
		return nil, s.fail(ctx, "webhook subscription", err)
	}
	return &notificationv1.RotateSecretResponse{Secret: secret, PreviousExpiresAt: timestamppb.New(until)}, nil
}

// enqueue records deliveries in their own transaction and kicks the
// dispatcher.
func (s *Server) enqueue(ctx context.Context, ds []store.Delivery, reset bool) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, s.d.Store.Pool(), func(tx pgx.Tx) error {
		var err error
		n, err = store.Enqueue(ctx, tx, ds, reset)
		return err
	})
	if err == nil && s.d.Kick != nil {
		s.d.Kick()
	}
	return n, err
}

// SendTestEvent implements NotificationService.
func (s *Server) SendTestEvent(ctx context.Context, req *notificationv1.SendTestEventRequest) (*notificationv1.Delivery, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	sub, err := s.d.Store.Subscription(ctx, p.TenantID, req.GetSubscriptionId())
	if err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	now := time.Now()
	id := "msg_test_" + strings.ReplaceAll(eventbus.NewEventID(), "-", "")
	body := fmt.Appendf(nil, `{"type":"test","timestamp":%q,"data":{"subscription_id":%q,"message":"a test event from Parley"}}`,
		now.UTC().Format(time.RFC3339Nano), sub.ID)
	d := store.Delivery{TenantID: p.TenantID, ID: id, SubscriptionID: sub.ID, Kind: sub.Kind, EventKind: "test", Payload: body,
		Recipients: sub.Emails, ExpiresAt: now.Add(s.d.RetryFor)}
	if _, err := s.enqueue(ctx, []store.Delivery{d}, false); err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	return s.delivery(ctx, p.TenantID, id)
}

func (s *Server) delivery(ctx context.Context, tenant, id string) (*notificationv1.Delivery, error) {
	d, err := s.d.Store.Delivery(ctx, tenant, id)
	if err != nil {
		return nil, s.fail(ctx, "delivery", err)
	}
	return deliveryProto(d), nil
}

// SendTranscript implements NotificationService: an email delivery of the
// transcript, through the tenant's built-in "transcripts" subscription.
func (s *Server) SendTranscript(ctx context.Context, req *notificationv1.SendTranscriptRequest) (*notificationv1.Delivery, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !eventbus.ValidConversationID(req.GetConversationId()) {
		return nil, grpcx.Invalid("conversation_id", "not a conversation id")
	}
	if !validEmail(req.GetEmail()) {
		return nil, grpcx.Invalid("email", "not an email address")
	}
	if _, ok := notificationv1.TranscriptAudience_name[int32(req.GetAudience())]; !ok {
		return nil, grpcx.Invalid("audience", "want TRANSCRIPT_AUDIENCE_VISITOR or TRANSCRIPT_AUDIENCE_AGENT")
	}
	if !s.d.Email {
		return nil, grpcx.FailedPrecondition("EMAIL_NOT_CONFIGURED", "notification", "email is not configured on this service")
	}
	sub, err := s.d.Store.TranscriptSubscription(ctx, p.TenantID)
	if err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	id := "msg_tr_" + strings.ReplaceAll(eventbus.NewEventID(), "-", "")
	payload := []byte(`{"audience":"` + delivery.AudienceVisitor + `"}`)
	if req.GetAudience() == notificationv1.TranscriptAudience_TRANSCRIPT_AUDIENCE_AGENT {
		payload = []byte(`{"audience":"` + delivery.AudienceAgent + `"}`)
	}
	d := store.Delivery{TenantID: p.TenantID, ID: id, SubscriptionID: sub.ID, Kind: "email", EventKind: "transcript",
		Conversation: req.GetConversationId(), Payload: payload, Recipients: []string{req.GetEmail()}, ExpiresAt: time.Now().Add(s.d.RetryFor)}
	if _, err := s.enqueue(ctx, []store.Delivery{d}, false); err != nil {
		return nil, s.fail(ctx, "delivery", err)
	}
	return s.delivery(ctx, p.TenantID, id)
}

func limit(n uint32, def int) int {
	if n == 0 {
		return def
	}
	return min(int(n), maxListLimit)
}

// ListDeliveries implements NotificationService.
func (s *Server) ListDeliveries(ctx context.Context, req *notificationv1.ListDeliveriesRequest) (*notificationv1.ListDeliveriesResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetSubscriptionId() == "" {
		return nil, grpcx.Invalid("subscription_id", "required")
	}
	if st := req.GetState(); st != "" && !slices.Contains([]string{store.Pending, store.Delivered, store.Failed}, st) {
		return nil, grpcx.Invalid("state", `one of "pending", "delivered", "failed"`)
	}
	ds, err := s.d.Store.Deliveries(ctx, p.TenantID, req.GetSubscriptionId(), req.GetState(), limit(req.GetLimit(), 100))
	if err != nil {
		return nil, s.fail(ctx, "deliveries", err)
	}
	out := &notificationv1.ListDeliveriesResponse{}
	for _, d := range ds {
		out.Deliveries = append(out.Deliveries, deliveryProto(d))
	}
	return out, nil
}

// ListAttempts implements NotificationService.
func (s *Server) ListAttempts(ctx context.Context, req *notificationv1.ListAttemptsRequest) (*notificationv1.ListAttemptsResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetSubscriptionId() == "" {
		return nil, grpcx.Invalid("subscription_id", "required")
	}
	as, err := s.d.Store.Attempts(ctx, p.TenantID, req.GetSubscriptionId(), req.GetDeliveryId(), limit(req.GetLimit(), 100))
	if err != nil {
		return nil, s.fail(ctx, "attempts", err)
	}
	out := &notificationv1.ListAttemptsResponse{}
	for _, a := range as {
		out.Attempts = append(out.Attempts, &notificationv1.Attempt{DeliveryId: a.DeliveryID, SubscriptionId: a.SubscriptionID,
			AttemptedAt: timestamppb.New(a.At), StatusCode: uint32(a.Status), LatencyMs: uint32(a.LatencyMS), Error: a.Error, Success: a.Success})
	}
	return out, nil
}

// ReplayDelivery implements NotificationService.
func (s *Server) ReplayDelivery(ctx context.Context, req *notificationv1.ReplayDeliveryRequest) (*notificationv1.Delivery, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	d, err := s.d.Store.Requeue(ctx, p.TenantID, req.GetDeliveryId(), time.Now().Add(s.d.RetryFor))
	if err != nil {
		return nil, s.fail(ctx, "delivery", err)
	}
	if s.d.Kick != nil {
		s.d.Kick()
	}
	return deliveryProto(d), nil
}

// ReplayEvents implements NotificationService: it folds the tenant's log
// from its start (so conditions and payloads see the conversation as it
// was) and queues again, under their stable ids, the deliveries of the
// events from the given sequence or time that the subscription selects.
func (s *Server) ReplayEvents(ctx context.Context, req *notificationv1.ReplayEventsRequest) (*notificationv1.ReplayEventsResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	var fromSeq uint64
	var fromTime time.Time
	switch f := req.GetFrom().(type) {
	case *notificationv1.ReplayEventsRequest_FromSequence:
		fromSeq = f.FromSequence
	case *notificationv1.ReplayEventsRequest_FromTime:
		if !f.FromTime.IsValid() {
			return nil, grpcx.Invalid("from_time", "not a valid timestamp")
		}
		fromTime = f.FromTime.AsTime()
	default:
		return nil, grpcx.Invalid("from", "set from_sequence or from_time")
	}
	sub, err := s.d.Store.Subscription(ctx, p.TenantID, req.GetSubscriptionId())
	if err != nil {
		return nil, s.fail(ctx, "subscription", err)
	}
	last, err := s.d.Bus.LastSequence(ctx)
	if err != nil {
		s.d.Log.WarnContext(ctx, "replay: event log", "err", err)
		return nil, grpcx.Unavailable("the event log is unavailable; retry later")
	}
	states := map[string]*taggingv1.RuleConversation{}
	total := 0
	now := time.Now()
	read, err := s.d.Bus.Replay(ctx, 1, last, 1000, []string{eventbus.TenantSubjects(p.TenantID)}, func(ctx context.Context, batch []*eventbus.Delivery) error {
		var ds []store.Delivery
		for _, d := range batch {
			env := d.Envelope
			st := states[env.GetConversationId()]
			if st == nil {
				st = &taggingv1.RuleConversation{}
				states[env.GetConversationId()] = st
			}
			ev, _ := facts.Apply(st, env, s.d.Folder.Facts)
			if d.StreamSeq < fromSeq || (!fromTime.IsZero() && env.GetRecordedAt().AsTime().Before(fromTime)) {
				continue
			}
			out, err := s.d.Folder.Deliveries(ctx, []*store.Subscription{sub}, env, d.StreamSeq, st, ev, now)
			if err != nil {
				return err
			}
			ds = append(ds, out...)
		}
		n, err := s.enqueue(ctx, ds, true)
		total += n
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.d.Log.WarnContext(ctx, "replay failed", "subscription_id", sub.ID, "err", err)
		return nil, grpcx.Unavailable("the replay was interrupted; the deliveries queued so far stay queued; retry to finish")
	}
	return &notificationv1.ReplayEventsResponse{Enqueued: uint32(total), LastSequence: read}, nil
}

func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

func toProto(s *store.Subscription) *notificationv1.Subscription {
	return &notificationv1.Subscription{SubscriptionId: s.ID, Kind: s.Kind, Target: s.Target, EventKinds: s.EventKinds,
		CreatedAt: timestamppb.New(s.CreatedAt), Name: s.Name, Condition: s.Condition, Emails: s.Emails, OwnerEmail: s.OwnerEmail,
		State: s.State, DisabledReason: s.DisabledReason, DisabledAt: ts(s.DisabledAt), FailingSince: ts(s.FailingSince),
		UpdatedAt: timestamppb.New(s.UpdatedAt), Alerts: s.Alerts, Transcript: s.Transcript}
}

func deliveryProto(d *store.Delivery) *notificationv1.Delivery {
	target := strings.Join(d.Recipients, ",")
	out := &notificationv1.Delivery{DeliveryId: d.ID, SubscriptionId: d.SubscriptionID, Kind: d.Kind, Target: target, State: d.State,
		Attempts: uint32(d.Attempts), LastError: d.LastError, CreatedAt: timestamppb.New(d.CreatedAt), EventId: d.EventID,
		EventKind: d.EventKind, ConversationId: d.Conversation, StreamSeq: d.StreamSeq, LastStatusCode: uint32(d.LastStatus),
		DeliveredAt: ts(d.DeliveredAt)}
	if d.State == store.Pending {
		out.NextAttemptAt = timestamppb.New(d.NextAttemptAt)
	}
	return out
}

// CreateAlertRule implements NotificationService.
func (s *Server) CreateAlertRule(ctx context.Context, req *notificationv1.CreateAlertRuleRequest) (*notificationv1.AlertRule, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	r := req.GetRule()
	a := &store.AlertRule{TenantID: p.TenantID, ID: "alr_" + strings.ReplaceAll(eventbus.NewEventID(), "-", ""), Name: r.GetName(),
		EventKind: r.GetEventKind(), Condition: r.GetCondition(), Window: time.Duration(r.GetWindowSeconds()) * time.Second,
		Threshold: int64(r.GetThreshold()), Comparison: r.GetComparison(), Metric: r.GetMetric(), IssueKind: r.GetIssueKind(),
		RateThreshold: r.GetRateThreshold(), MinMessages: int64(r.GetMinMessages()), Currency: r.GetCurrency(), BudgetMicros: r.GetBudgetMicros()}
	if err := alerts.Validate(a, s.d.AlertStep); err != nil {
		return nil, err
	}
	if strings.TrimSpace(a.Condition) != "" {
		if _, err := s.d.Engine.Compile(a.Condition); err != nil {
			return nil, grpcx.Invalid("rule.condition", err.Error())
		}
	}
	if s.d.MaxAlertRules > 0 {
		rules, err := s.d.Store.AlertRules(ctx, p.TenantID)
		if err != nil {
			return nil, s.fail(ctx, "alert rules", err)
		}
		if len(rules) >= s.d.MaxAlertRules {
			return nil, grpcx.ResourceExhausted(fmt.Sprintf("the tenant has %d alert rules, the most allowed; delete one", len(rules)), 0)
		}
	}
	out, err := s.d.Store.CreateAlertRule(ctx, a)
	if err != nil {
		return nil, s.fail(ctx, "alert rule", err)
	}
	return alerts.ToProto(out), nil
}

// ListAlertRules implements NotificationService.
func (s *Server) ListAlertRules(ctx context.Context, _ *notificationv1.ListAlertRulesRequest) (*notificationv1.ListAlertRulesResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	rules, err := s.d.Store.AlertRules(ctx, p.TenantID)
	if err != nil {
		return nil, s.fail(ctx, "alert rules", err)
	}
	out := &notificationv1.ListAlertRulesResponse{}
	for _, a := range rules {
		out.Rules = append(out.Rules, alerts.ToProto(a))
	}
	return out, nil
}

// DeleteAlertRule implements NotificationService.
func (s *Server) DeleteAlertRule(ctx context.Context, req *notificationv1.DeleteAlertRuleRequest) (*notificationv1.DeleteAlertRuleResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.d.Store.DeleteAlertRule(ctx, p.TenantID, req.GetAlertId()); err != nil {
		return nil, s.fail(ctx, "alert rule", err)
	}
	return &notificationv1.DeleteAlertRuleResponse{}, nil
}
