package facts

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
)

// The built-in detectors. Each name is also the issue it reports and the tag
// it applies.
const (
	UnidentifiedResponse = "unidentified-response"
	BotError             = "bot-error"
	RepeatedQuestion     = "repeated-question"
	AbandonedAfterBot    = "abandoned-after-bot"
	LongWait             = "long-wait"
	NegativeFeedback     = "negative-feedback"
)

// DetectorNames lists every built-in detector.
func DetectorNames() []string {
	return []string{UnidentifiedResponse, BotError, RepeatedQuestion, AbandonedAfterBot, LongWait, NegativeFeedback}
}

// DetectorRuleID is the rule id under which a detector's tag is recorded
// and reported in TagApplied.rule_id ("builtin:long-wait"). Rule ids cannot
// contain ':', so it never collides with a rule.
func DetectorRuleID(detector string) string { return "builtin:" + detector }

// Settings tune the detectors.
type Settings struct {
	// Disabled names detectors that do not run.
	Disabled []string
	// LongWait is the response time above which long-wait fires.
	LongWait time.Duration
	// RepeatWindow is how many earlier visitor messages repeated-question
	// compares a new one with.
	RepeatWindow int
	// NegativePhrases are the words and phrases negative-feedback looks for
	// in visitor messages (case-insensitive, whole words).
	NegativePhrases []string
}

// DefaultSettings are the detector settings unless configured otherwise.
func DefaultSettings() Settings {
	return Settings{
		LongWait:     30 * time.Second,
		RepeatWindow: 5,
		NegativePhrases: []string{
			"useless", "not helpful", "terrible", "speak to a human", "talk to a human",
			"real person", "that's wrong", "you are wrong", "waste of time",
		},
	}
}

// Or returns s with its zero fields taken from def. Disabled is never
// inherited: a tenant's own list replaces the default one only when the
// tenant set one (callers decide).
func (s Settings) Or(def Settings) Settings {
	if s.LongWait <= 0 {
		s.LongWait = def.LongWait
	}
	if s.RepeatWindow <= 0 {
		s.RepeatWindow = def.RepeatWindow
	}
	if len(s.NegativePhrases) == 0 {
		s.NegativePhrases = def.NegativePhrases
	}
	return s
}

// Validate reports the first invalid setting as (field, problem).
func (s Settings) Validate() (field, problem string) {
	for _, d := range s.Disabled {
		if !slices.Contains(DetectorNames(), d) {
			return "disabled", fmt.Sprintf("unknown detector %q (known: %s)", d, strings.Join(DetectorNames(), ", "))
		}
	}
	if s.LongWait < 0 {
		return "long_wait_ms", "must not be negative"
	}
	if s.RepeatWindow < 0 || s.RepeatWindow > 50 {
		return "repeat_window", "must be between 0 and 50"
	}
	if len(s.NegativePhrases) > 200 {
		return "negative_phrases", "at most 200 phrases"
	}
	for _, p := range s.NegativePhrases {
		if Normalize(p) == "" || len(p) > 200 {
			return "negative_phrases", fmt.Sprintf("phrase %q must have a letter or digit and at most 200 bytes", p)
		}
	}
	return "", ""
}

// Detectors are compiled settings, ready to run.
type Detectors struct {
	enabled  map[string]bool
	longWait int64
	window   int
	phrases  []string // normalized, padded with spaces
	raw      []string
}

// NewDetectors compiles settings (zero fields are not filled in; see Or).
func NewDetectors(s Settings) *Detectors {
	d := &Detectors{enabled: map[string]bool{}, longWait: s.LongWait.Milliseconds(), window: s.RepeatWindow}
	for _, n := range DetectorNames() {
		d.enabled[n] = !slices.Contains(s.Disabled, n)
	}
	for _, p := range s.NegativePhrases {
		if n := Normalize(p); n != "" {
			d.phrases = append(d.phrases, " "+n+" ")
			d.raw = append(d.raw, p)
		}
	}
	return d
}

// Enabled reports whether a detector runs.
func (d *Detectors) Enabled(name string) bool { return d.enabled[name] }

// Issue is one detection.
type Issue struct {
	// Detector is the detector's name, also the issue and the tag.
	Detector string
	// MessageID is the message that triggered it, when there is one.
	MessageID string
	Details   string
}

// Detect runs the enabled detectors on the event just folded into c (ev is
// what Apply returned for env). done reports detectors that already fired
// for this conversation; they are skipped.
func (d *Detectors) Detect(c *taggingv1.RuleConversation, ev *taggingv1.RuleEvent, env *eventv1.Envelope, done func(detector string) bool) []Issue {
	var out []Issue
	run := func(name string) bool { return d.enabled[name] && !done(name) }
	switch ev.Kind {
	case "message_posted":
		if c.Ended {
			return nil // a late message: the conversation did not see it
		}
		if ev.Unidentified && run(UnidentifiedResponse) {
			out = append(out, Issue{UnidentifiedResponse, ev.MessageId, fmt.Sprintf("%s message marked unidentified (fallback answer)", ev.Role)})
		}
		if (ev.Role == "bot" || ev.Role == "agent") && d.longWait > 0 && ev.ResponseMs > d.longWait && run(LongWait) {
			out = append(out, Issue{LongWait, ev.MessageId, fmt.Sprintf("%s answered after %s (threshold %s)", ev.Role, ms(ev.ResponseMs), ms(d.longWait))})
		}
		if ev.Role == "visitor" {
			norm := Normalize(ev.Text)
			if run(RepeatedQuestion) {
				if prev, ok := d.repeated(c, ev.Text, norm); ok {
					out = append(out, Issue{RepeatedQuestion, ev.MessageId, fmt.Sprintf("visitor repeated %q", prev)})
				}
			}
			if run(NegativeFeedback) && norm != "" {
				padded := " " + norm + " "
				for i, p := range d.phrases {
					if strings.Contains(padded, p) {
						out = append(out, Issue{NegativeFeedback, ev.MessageId, fmt.Sprintf("visitor said %q", d.raw[i])})
						break
					}
				}
			}
		}
	case "debug_trace":
		if ev.Failed && run(BotError) {
			name := ""
			for _, s := range env.GetDebugTrace().GetSteps() {
				if s.GetError() {
					name = s.GetName()
					break
				}
			}
			out = append(out, Issue{BotError, ev.MessageId, fmt.Sprintf("debug trace step %q failed", name)})
		}
	case "flow_dropped":
		if ev.Failed && run(BotError) {
			out = append(out, Issue{BotError, "", fmt.Sprintf("flow %q failed at step %q node %q", ev.FlowId, ev.StepId, ev.NodeId)})
		}
	case "operator_no_response":
		if run(LongWait) {
			out = append(out, Issue{LongWait, "", fmt.Sprintf("no agent joined within %ds of the handoff request", env.GetOperatorNoResponse().GetWaitedSeconds())})
		}
	case "conversation_ended":
		if run(AbandonedAfterBot) && abandoned(c) {
			last := c.Messages[len(c.Messages)-1]
			out = append(out, Issue{AbandonedAfterBot, last.MessageId, fmt.Sprintf("conversation ended (%s) after the bot's message without a visitor reply", orUnknown(c.EndReason))})
		}
	}
	return out
}

// abandoned: the conversation ended because the visitor left (closed it or
// went silent until the stale timeout), the visitor had written before, the
// last message was the bot's, and the conversation had not succeeded (no
// goal reached, and the last flow started was not completed).
func abandoned(c *taggingv1.RuleConversation) bool {
	switch c.EndReason {
	case "visitor_closed", "stale_timeout", "":
	default:
		return false
	}
	if !c.VisitorReplied || len(c.Messages) == 0 || c.Messages[len(c.Messages)-1].Role != "bot" || len(c.Goals) > 0 {
		return false
	}
	if n := len(c.FlowsStarted); n > 0 && slices.Contains(c.FlowsCompleted, c.FlowsStarted[n-1]) {
		return false
	}
	return true
}

// repeated compares the visitor's new message with the visitor's previous
// RepeatWindow messages: equal after normalization, or sharing at least 80%
// of their words. Short answers ("yes", "no thanks") are not questions: the
// message needs three words, or two and a question mark.
func (d *Detectors) repeated(c *taggingv1.RuleConversation, text, norm string) (string, bool) {
	n := len(strings.Fields(norm))
	if n < 2 || (n < 3 && !strings.ContainsAny(text, "?？")) {
		return "", false
	}
	words := wordSet(norm)
	seen := 0
	// c.Messages ends with the message being checked.
	for i := len(c.Messages) - 2; i >= 0 && seen < d.window; i-- {
		m := c.Messages[i]
		if m.Role != "visitor" {
			continue
		}
		seen++
		prev := Normalize(m.Text)
		if prev == norm || jaccard(words, wordSet(prev)) >= 0.8 {
			return m.Text, true
		}
	}
	return "", false
}

// Normalize lower-cases s, drops apostrophes, turns every other character
// that is not a letter or digit into a space and collapses spaces: "Where's
// my ORDER??" becomes "wheres my order".
func Normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		switch {
		case r == '\'' || r == '’':
			continue
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = false
			b.WriteRune(unicode.ToLower(r))
		default:
			space = true
		}
	}
	return b.String()
}

func wordSet(s string) map[string]struct{} {
	m := map[string]struct{}{}
	for _, w := range strings.Fields(s) {
		m[w] = struct{}{}
	}
	return m
}

func jaccard(a, b map[string]struct{}) float64 {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	inter := 0
	for w := range a {
		if _, ok := b[w]; ok {
			inter++
		}
	}
	return float64(inter) / float64(len(a)+len(b)-inter)
}

func ms(v int64) string { return (time.Duration(v) * time.Millisecond).String() }

func orUnknown(s string) string {
	if s == "" {
		return "unknown reason"
	}
	return s
}
