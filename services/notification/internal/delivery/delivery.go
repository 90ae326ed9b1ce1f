// Package delivery sends the recorded deliveries: it claims due ones from
// PostgreSQL (any replica may send any delivery), calls the webhook or the
// mailer, records every attempt, retries with exponential backoff and
// jitter until the delivery expires, and disables endpoints that keep
// failing or answer 410 Gone. Each subscription (endpoint) has its own
// concurrency and rate limit, so a slow endpoint only delays itself.
package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/time/rate"

	"github.com/parley-dev/parley/services/notification/internal/mail"
	"github.com/parley-dev/parley/services/notification/internal/store"
	"github.com/parley-dev/parley/services/notification/internal/webhook"
)

// MailMessage is one email to send.
type MailMessage struct {
	TenantID string
	// Key identifies the delivery: a retried one keeps its Message-ID.
	Key     string
	To      []string
	Subject string
	// Text is the plain-text body (the event as JSON for an event email).
	Text string
	// EventKind and Conversation name the event of an event email (empty
	// for notices).
	EventKind, Conversation string
	// TranscriptOf, when set, asks for the transcript of this conversation
	// to be rendered into the mail, for Audience.
	TranscriptOf string
	Audience     string
}

// Audiences of MailMessage.Audience (a transcript delivery's payload
// {"audience": ...}); empty is the visitor.
const (
	AudienceVisitor = "visitor"
	AudienceAgent   = "agent"
)

// Mailer sends email (the service's SMTP sender).
type Mailer interface {
	Send(ctx context.Context, m MailMessage) error
}

// Config tunes a Dispatcher.
type Config struct {
	Store  *store.Store
	Client *webhook.Client
	// Mailer sends email deliveries; nil: they fail and are retried.
	Mailer Mailer
	Log    *slog.Logger
	// RetryBase is the first retry's delay, doubled per attempt up to
	// RetryMax, each randomized to between half and all of it.
	RetryBase, RetryMax time.Duration
	// DisableAfter disables an endpoint whose attempts all failed for that
	// long.
	DisableAfter time.Duration
	// AttemptTimeout bounds one attempt; a claimed delivery is hidden from
	// other replicas for twice that.
	AttemptTimeout time.Duration
	// PerEndpoint bounds one subscription's attempts in flight on this
	// replica; Rate its attempts per second (burst: the same).
	PerEndpoint int
	Rate        float64
	// Workers bounds attempts in flight on this replica.
	Workers int
	// Poll is how often due deliveries are looked for without a Kick.
	Poll time.Duration
	Now  func() time.Time
	// Meter, when set, receives parley_notification_attempts_total
	// (by kind and result) and parley_notification_attempt_duration_seconds.
	Meter metric.Meter
}

// Dispatcher sends deliveries until its context ends.
type Dispatcher struct {
	cfg  Config
	kick chan struct{}

	mu       sync.Mutex
	inFlight map[string]int
	limiters map[string]*rate.Limiter
	slots    chan struct{}
	wg       sync.WaitGroup

	attempts metric.Int64Counter
	latency  metric.Float64Histogram
}

// New returns a dispatcher; Run starts it.
func New(cfg Config) *Dispatcher {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{cfg: cfg, kick: make(chan struct{}, 1), inFlight: map[string]int{},
		limiters: map[string]*rate.Limiter{}, slots: make(chan struct{}, cfg.Workers)}
	if cfg.Meter != nil {
		d.attempts, _ = cfg.Meter.Int64Counter("parley_notification_attempts_total",
			metric.WithDescription("Delivery attempts by kind (webhook, email) and result (success, failure, gone)."))
		d.latency, _ = cfg.Meter.Float64Histogram("parley_notification_attempt_duration_seconds",
			metric.WithDescription("Duration of delivery attempts."), metric.WithUnit("s"))
	}
	return d
}

// Kick makes the dispatcher look for due deliveries now.
func (d *Dispatcher) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Run claims and sends due deliveries until ctx ends, then waits for the
// attempts in flight.
func (d *Dispatcher) Run(ctx context.Context) error {
	defer d.wg.Wait()
	t := time.NewTicker(d.cfg.Poll)
	defer t.Stop()
	for {
		n, err := d.claim(ctx)
		if err != nil && ctx.Err() == nil {
			d.cfg.Log.WarnContext(ctx, "claiming deliveries failed; retrying", "err", err)
		}
		if n > 0 && err == nil {
			continue // more may be due
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-d.kick: // new deliveries, or an attempt finished
		}
	}
}

// claim takes what the free capacity allows and starts the attempts.
func (d *Dispatcher) claim(ctx context.Context) (int, error) {
	free := cap(d.slots) - len(d.slots)
	if free <= 0 {
		return 0, nil
	}
	d.mu.Lock()
	var busy []string
	for sub, n := range d.inFlight {
		if n >= d.cfg.PerEndpoint {
			busy = append(busy, sub)
		}
	}
	d.mu.Unlock()
	taken := map[string]int{}
	claimed, err := d.cfg.Store.Claim(ctx, busy, d.cfg.PerEndpoint, 2*d.cfg.AttemptTimeout, func(c *store.Claimed) bool {
		if free <= 0 {
			return false
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.inFlight[c.SubscriptionID]+taken[c.SubscriptionID] >= d.cfg.PerEndpoint || !d.limiter(c.SubscriptionID).Allow() {
			return false
		}
		taken[c.SubscriptionID]++
		free--
		return true
	})
	if err != nil {
		return 0, err
	}
	for _, c := range claimed {
		d.slots <- struct{}{}
		d.mu.Lock()
		d.inFlight[c.SubscriptionID]++
		d.mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer func() {
				d.mu.Lock()
				if d.inFlight[c.SubscriptionID]--; d.inFlight[c.SubscriptionID] <= 0 {
					delete(d.inFlight, c.SubscriptionID)
				}
				d.mu.Unlock()
				<-d.slots
				d.wg.Done()
				d.Kick()
			}()
			d.attempt(context.WithoutCancel(ctx), c)
		}()
	}
	return len(claimed), nil
}

func (d *Dispatcher) limiter(sub string) *rate.Limiter {
	l, ok := d.limiters[sub]
	if !ok {
		burst := max(int(d.cfg.Rate), 1)
		l = rate.NewLimiter(rate.Limit(d.cfg.Rate), burst)
		d.limiters[sub] = l
	}
	return l
}

// attempt sends one delivery and records the outcome.
func (d *Dispatcher) attempt(ctx context.Context, c *store.Claimed) {
	actx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	now := d.cfg.Now()
	o := store.Outcome{At: now}
	switch c.Kind {
	case "email":
		start := time.Now()
		err := errors.New("email is not configured on this service")
		if d.cfg.Mailer != nil {
			err = d.cfg.Mailer.Send(actx, mailOf(c))
		}
		o.Latency = time.Since(start)
		if err != nil {
			o.Error = truncate(mail.Reason(err), 512)
			o.Permanent = mail.IsPermanent(err)
			d.cfg.Log.WarnContext(ctx, "email delivery attempt failed", "tenant", c.TenantID, "delivery_id", c.ID,
				"permanent", o.Permanent, "err", err)
		}
		o.Success = err == nil
	default:
		secrets := []string{c.Secret}
		if c.PreviousSecret != "" && c.PreviousExpiresAt != nil && now.Before(*c.PreviousExpiresAt) {
			secrets = append(secrets, c.PreviousSecret)
		}
		r := d.cfg.Client.Send(actx, webhook.Request{URL: c.Target, ID: c.ID, At: now, Body: c.Payload, Secrets: secrets})
		o.Status, o.Latency, o.Success = r.Status, r.Latency, r.Err == nil
		if r.Err != nil {
			o.Error = truncate(r.Err.Error(), 512)
		}
		o.Gone = r.Status == http.StatusGone
	}
	o.NextRetry = now.Add(Backoff(c.Attempts+1, d.cfg.RetryBase, d.cfg.RetryMax))
	d.observe(ctx, c.Kind, o)
	rec, err := d.cfg.Store.Record(ctx, c, o, d.cfg.DisableAfter)
	if err != nil {
		// The claim expires and the delivery is attempted again.
		d.cfg.Log.WarnContext(ctx, "recording a delivery attempt failed", "delivery_id", c.ID, "err", err)
		return
	}
	if rec.Disabled {
		d.disabled(ctx, c, rec)
	}
}

func (d *Dispatcher) observe(ctx context.Context, kind string, o store.Outcome) {
	if d.attempts == nil {
		return
	}
	result := "failure"
	switch {
	case o.Success:
		result = "success"
	case o.Gone:
		result = "gone"
	}
	attrs := metric.WithAttributes(attribute.String("kind", kind), attribute.String("result", result))
	d.attempts.Add(ctx, 1, attrs)
	d.latency.Record(ctx, o.Latency.Seconds(), attrs)
}

// disabled tells the owner that an endpoint was disabled: a log line and,
// with an owner address and a mailer, an email.
func (d *Dispatcher) disabled(ctx context.Context, c *store.Claimed, rec store.Recorded) {
	d.cfg.Log.WarnContext(ctx, "webhook endpoint disabled", "tenant", c.TenantID, "subscription_id", c.SubscriptionID,
		"target", c.Target, "reason", rec.DisabledReason)
	if rec.OwnerEmail == "" || d.cfg.Mailer == nil {
		return
	}
	err := d.cfg.Mailer.Send(ctx, MailMessage{TenantID: c.TenantID, To: []string{rec.OwnerEmail},
		Subject: "Parley disabled your webhook " + c.Target,
		Text: "Parley stopped sending events to " + c.Target + " (subscription " + c.SubscriptionID + "): " + rec.DisabledReason +
			".\nFix the endpoint, then resume the subscription (ResumeSubscription); pending deliveries are sent then."})
	if err != nil {
		d.cfg.Log.WarnContext(ctx, "telling the owner of a disabled endpoint failed", "subscription_id", c.SubscriptionID, "err", err)
	}
}

func mailOf(c *store.Claimed) MailMessage {
	m := MailMessage{TenantID: c.TenantID, Key: c.ID, To: c.Recipients, Text: string(c.Payload)}
	switch c.EventKind {
	case "transcript":
		m.Subject, m.TranscriptOf = "Transcript of conversation "+c.Conversation, c.Conversation
		var p struct{ Audience string }
		_ = json.Unmarshal(c.Payload, &p)
		m.Audience = p.Audience
	default:
		m.Subject = "Parley: " + c.EventKind + " in conversation " + c.Conversation
		m.EventKind, m.Conversation = c.EventKind, c.Conversation
		if c.Transcript && c.EventKind == "conversation_ended" {
			// The subscribers are the team: the agent's copy.
			m.TranscriptOf, m.Audience = c.Conversation, AudienceAgent
		}
	}
	return m
}

// Backoff is the delay before retry n (1-based): base doubled per retry up
// to max, randomized to between half and all of it (jitter).
func Backoff(n int, base, maxDelay time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	return d/2 + rand.N(d/2+1)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
