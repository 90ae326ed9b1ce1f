package alerts

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/services/notification/internal/store"
)

// Limits of a rule (docs/webhooks.md, Alerts).
const (
	maxNameBytes      = 200
	maxIssueKindBytes = 64
	maxThreshold      = 1 << 40
	maxMinMessages    = 1_000_000
	maxBudgetMicros   = 1_000_000_000_000_000 // a billion units of a currency
	// costWindow keeps a cost rule's buckets for a whole local day (25h
	// with a daylight-saving change).
	costWindow = 25 * time.Hour
)

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// Validate checks a rule to be created and fills the fields its metric
// implies (event kind, comparison, window); the error is InvalidArgument
// naming the field. step is the windows' granularity.
func Validate(a *store.AlertRule, step time.Duration) error {
	if a.Metric == "" {
		a.Metric = store.MetricCount
	}
	if a.Comparison == "" {
		a.Comparison = store.Above
	}
	if len(a.Name) > maxNameBytes {
		return grpcx.Invalid("rule.name", fmt.Sprintf("must be at most %d bytes", maxNameBytes))
	}
	if a.Comparison != store.Above && a.Comparison != store.Below {
		return grpcx.Invalid("rule.comparison", `must be "above" or "below"`)
	}
	window := func() error {
		if a.Window < step || a.Window > 24*time.Hour || a.Window%step != 0 {
			s := int(step / time.Second)
			return grpcx.Invalid("rule.window_seconds", fmt.Sprintf("must be a multiple of %d from %d to 86400", s, s))
		}
		return nil
	}
	implied := func(kind string) error {
		if a.EventKind != "" && a.EventKind != kind {
			return grpcx.Invalid("rule.event_kind", fmt.Sprintf("%s counts %s; leave it empty", a.Metric, kind))
		}
		if a.Comparison != store.Above {
			return grpcx.Invalid("rule.comparison", fmt.Sprintf(`%s fires above its limit only; leave it empty or "above"`, a.Metric))
		}
		if a.IssueKind != "" {
			return grpcx.Invalid("rule.issue_kind", "only with event_kind issue_detected")
		}
		a.EventKind = kind
		return nil
	}
	switch a.Metric {
	case store.MetricCount:
		switch {
		case !eventbus.IsKind(a.EventKind):
			return grpcx.Invalid("rule.event_kind", "unknown event kind; one of "+strings.Join(eventbus.Kinds(), ", "))
		case a.Threshold < 1 || a.Threshold > maxThreshold:
			return grpcx.Invalid("rule.threshold", "must be from 1 to 2^40")
		case a.IssueKind != "" && a.EventKind != "issue_detected":
			return grpcx.Invalid("rule.issue_kind", "only with event_kind issue_detected")
		case len(a.IssueKind) > maxIssueKindBytes:
			return grpcx.Invalid("rule.issue_kind", fmt.Sprintf("must be at most %d bytes", maxIssueKindBytes))
		}
		return window()
	case store.MetricUnidentifiedRate:
		if err := implied("message_posted"); err != nil {
			return err
		}
		switch {
		case math.IsNaN(a.RateThreshold) || a.RateThreshold <= 0 || a.RateThreshold > 1:
			return grpcx.Invalid("rule.rate_threshold", "must be above 0 and at most 1")
		case a.MinMessages > maxMinMessages:
			return grpcx.Invalid("rule.min_messages", fmt.Sprintf("must be at most %d", maxMinMessages))
		}
		a.Threshold = 0
		return window()
	case store.MetricCostPerDay:
		if err := implied("usage_recorded"); err != nil {
			return err
		}
		switch {
		case !currencyCode.MatchString(a.Currency):
			return grpcx.Invalid("rule.currency", "must be an ISO 4217 code such as USD or EUR")
		case a.BudgetMicros < 1 || a.BudgetMicros > maxBudgetMicros:
			return grpcx.Invalid("rule.budget_micros", "must be from 1 to 10^15")
		case a.Window != 0:
			return grpcx.Invalid("rule.window_seconds", "cost_per_day sums the tenant's calendar day; leave it 0")
		}
		a.Threshold, a.Window = 0, costWindow
		return nil
	}
	return grpcx.Invalid("rule.metric", `must be "count", "unidentified_rate" or "cost_per_day"`)
}
