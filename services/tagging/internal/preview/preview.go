// Package preview tells what a candidate rule would change before it is
// created, changed or enabled: it replays the conversations of the tenant's
// last days with the backfill's evaluation (backfill.Evaluate, the one home
// of rule evaluation over history) and compares the result with the tags the
// rule applies today. It emits nothing and changes no state.
//
// The window: conversations whose first event ingest recorded (the
// envelope's recorded_at) within the last Days days. The replay starts at the
// tenant's first event recorded in the window, found by a binary search over
// the log; a conversation that began before it is left out, so every
// conversation previewed is folded from its first event.
package preview

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/rules"
	"github.com/parley-dev/parley/services/tagging/internal/backfill"
	"github.com/parley-dev/parley/services/tagging/internal/store"
)

// Bounds of a preview.
const (
	DefaultDays = 7
	MaxDays     = 90
	// MaxSamples bounds each sample list of a result.
	MaxSamples = 20
)

// ErrTooLarge: the window holds more conversations than a replay may hold
// in memory (backfill.ErrTooLarge).
var ErrTooLarge = backfill.ErrTooLarge

// Log is the part of the event log a preview reads.
type Log interface {
	LastOnSubject(ctx context.Context, subject string) (eventbus.StoredMsg, bool, error)
	NextOnSubject(ctx context.Context, seq uint64, subject string) (eventbus.StoredMsg, bool, error)
}

// Previewer runs previews.
type Previewer struct {
	store *store.Store
	log   Log
	eval  *backfill.Backfiller
	now   func() time.Time
}

// New returns a previewer; now is time.Now when nil.
func New(st *store.Store, log Log, eval *backfill.Backfiller, now func() time.Time) *Previewer {
	if now == nil {
		now = time.Now
	}
	return &Previewer{store: st, log: log, eval: eval, now: now}
}

// Request is one preview.
type Request struct {
	Tenant string
	// RuleID names the rule the candidate would replace ("": a new rule,
	// which tags nothing today).
	RuleID string
	// Program is the compiled candidate expression.
	Program *rules.Program
	// Days is the window, 1..MaxDays.
	Days int
}

// Result is what the candidate would change within the window.
type Result struct {
	Since time.Time
	// RuleVersion is the version of the rule compared with (0: new rule).
	RuleVersion int64
	// Scanned conversations began in the window; Matched of them the
	// candidate matches.
	Scanned, Matched uint64
	// Gained: matched, not tagged by the rule today. Lost: tagged by the
	// rule today, not matched.
	Gained, Lost uint64
	// Samples, sorted, at most MaxSamples each.
	GainedSample, LostSample []string
	// Events read from the log.
	Events uint64
}

// Run previews req.
func (p *Previewer) Run(ctx context.Context, req Request) (Result, error) {
	res := Result{Since: p.now().Add(-time.Duration(req.Days) * 24 * time.Hour)}
	tagged := map[string]bool{}
	if req.RuleID != "" {
		rule, err := p.store.GetRule(ctx, req.Tenant, req.RuleID)
		if err != nil {
			return Result{}, err
		}
		res.RuleVersion = rule.Version
		applied, err := p.store.AppliedForRule(ctx, req.Tenant, req.RuleID)
		if err != nil {
			return Result{}, err
		}
		for _, a := range applied {
			tagged[a.ConversationID] = true
		}
	}
	subject := eventbus.TenantSubjects(req.Tenant)
	last, found, err := p.log.LastOnSubject(ctx, subject)
	if err != nil || !found {
		return res, unavailable(err)
	}
	first, _, err := p.log.NextOnSubject(ctx, 1, subject)
	if err != nil {
		return Result{}, unavailable(err)
	}
	from, err := p.start(ctx, subject, res.Since, last.Sequence)
	if err != nil {
		return Result{}, err
	}
	if from > last.Sequence {
		return res, nil
	}
	convs, events, err := p.eval.Evaluate(ctx, req.Tenant, from, last.Sequence, req.Program)
	res.Events = events
	if err != nil {
		return Result{}, err
	}
	ids := make([]string, 0, len(convs))
	for id := range convs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		c := convs[id]
		if from > first.Sequence {
			began, err := p.began(ctx, req.Tenant, id)
			if err != nil {
				return Result{}, err
			}
			if began < c.FirstSeq {
				continue // began before the window
			}
		}
		res.Scanned++
		switch {
		case c.Matched:
			res.Matched++
			if !tagged[id] {
				res.Gained++
				res.GainedSample = sample(res.GainedSample, id)
			}
		case tagged[id]:
			res.Lost++
			res.LostSample = sample(res.LostSample, id)
		}
	}
	return res, nil
}

// start is the least sequence from which the tenant's next event was
// recorded at or after since (last+1: none).
func (p *Previewer) start(ctx context.Context, subject string, since time.Time, last uint64) (uint64, error) {
	lo, hi := uint64(1), last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, found, err := p.log.NextOnSubject(ctx, mid, subject)
		if err != nil {
			return 0, unavailable(err)
		}
		if !found {
			hi = mid
			continue
		}
		env, err := m.Envelope()
		if err != nil || env.GetRecordedAt().AsTime().Before(since) {
			lo = m.Sequence + 1
			continue
		}
		hi = mid
	}
	return lo, nil
}

// began is the sequence of the conversation's first event in the log.
func (p *Previewer) began(ctx context.Context, tenant, conv string) (uint64, error) {
	m, found, err := p.log.NextOnSubject(ctx, 1, eventbus.ConvSubject(tenant, conv, "*"))
	if err != nil {
		return 0, unavailable(err)
	}
	if !found {
		return 0, nil
	}
	return m.Sequence, nil
}

func sample(s []string, id string) []string {
	if len(s) < MaxSamples {
		s = append(s, id)
	}
	return s
}

// unavailable marks a failed read of the log as eventbus.ErrUnavailable
// (nil stays nil).
func unavailable(err error) error {
	if err == nil || errors.Is(err, eventbus.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("preview: read the log: %w: %w", eventbus.ErrUnavailable, err)
}
