package mask

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Actions.
const (
	ActionMask = "mask" // replace the match with "[<label>]"
	ActionHash = "hash" // replace the match with "[<label>:<keyed hash>]"
	ActionDrop = "drop" // empty the whole field value
)

// Limits on a tenant's rules (docs/privacy.md).
const (
	MaxRules         = 20
	MaxPatternLength = 256
	MaxRuleIDLength  = 64
)

// Rule is one masking rule as stored.
type Rule struct {
	ID       string
	Detector string // DetectorEmail, ..., DetectorCustom
	Pattern  string // RE2, for DetectorCustom only
	Action   string
}

// Violation names the field of a rule that is not valid.
type Violation struct{ Field, Description string }

func (v *Violation) Error() string { return v.Field + ": " + v.Description }

var ruleID = regexp.MustCompile(`^[a-z0-9][a-z0-9_\-]*$`)

// Check validates a rule; field names are those of the API's MaskingRule.
func Check(r Rule) *Violation {
	switch {
	case r.ID == "" || len(r.ID) > MaxRuleIDLength || !ruleID.MatchString(r.ID):
		return &Violation{"rule.id", fmt.Sprintf("1 to %d characters of a-z, 0-9, '_' and '-', starting with a letter or digit", MaxRuleIDLength)}
	case r.Action != ActionMask && r.Action != ActionHash && r.Action != ActionDrop:
		return &Violation{"rule.action", `one of "mask", "hash", "drop"`}
	}
	if r.Detector == DetectorCustom {
		if r.Pattern == "" || len(r.Pattern) > MaxPatternLength {
			return &Violation{"rule.pattern", fmt.Sprintf("a custom rule needs an RE2 pattern of 1 to %d bytes", MaxPatternLength)}
		}
		re, err := regexp.Compile(r.Pattern)
		if err != nil {
			return &Violation{"rule.pattern", "not a valid RE2 pattern: " + err.Error()}
		}
		if re.MatchString("") {
			return &Violation{"rule.pattern", "the pattern matches the empty string"}
		}
		return nil
	}
	if _, ok := builtins[r.Detector]; !ok {
		return &Violation{"rule.detector", `one of "email", "phone", "card", "iban", "custom"`}
	}
	if r.Pattern != "" {
		return &Violation{"rule.pattern", "only custom rules have a pattern"}
	}
	return nil
}

type compiled struct {
	id, label, action string
	det               detector
}

// Set is a tenant's compiled rules; the zero Set (or nil) changes nothing.
// It is safe for concurrent use.
type Set struct {
	rules []compiled
	key   []byte // the tenant's HMAC key of the hash action
}

// order is the order detectors run in: the most specific first, so that
// an IBAN is not taken apart by the card or phone detectors first.
var order = map[string]int{DetectorEmail: 0, DetectorIBAN: 1, DetectorCard: 2, DetectorPhone: 3, DetectorCustom: 4}

// Compile checks and compiles rules. They run in detector order (email,
// IBAN, card, phone, custom), then in ID order, whatever the storage order.
// key is the tenant's HMAC key for hash actions.
func Compile(rules []Rule, key []byte) (*Set, error) {
	rules = append([]Rule(nil), rules...)
	sort.Slice(rules, func(i, j int) bool {
		if oi, oj := order[rules[i].Detector], order[rules[j].Detector]; oi != oj {
			return oi < oj
		}
		return rules[i].ID < rules[j].ID
	})
	s := &Set{key: key}
	for _, r := range rules {
		if v := Check(r); v != nil {
			return nil, fmt.Errorf("mask: rule %q: %w", r.ID, v)
		}
		c := compiled{id: r.ID, label: r.Detector, action: r.Action}
		if r.Detector == DetectorCustom {
			c.det = detector{re: regexp.MustCompile(r.Pattern)}
			c.label = r.ID
		} else {
			c.det = builtins[r.Detector]
		}
		s.rules = append(s.rules, c)
	}
	return s, nil
}

// Empty reports whether the set has no rules.
func (s *Set) Empty() bool { return s == nil || len(s.rules) == 0 }

// String applies the rules to one value; ok is false when a drop rule
// matched (the value is to be removed).
func (s *Set) String(v string) (out string, ok bool) {
	if s == nil {
		return v, true
	}
	out = v
	for _, r := range s.rules {
		if r.det.may != nil && !r.det.may(out) {
			continue
		}
		matched := false
		out = r.det.re.ReplaceAllStringFunc(out, func(m string) string {
			if r.det.valid != nil && !r.det.valid(m) {
				return m
			}
			matched = true
			if r.action == ActionHash {
				return "[" + r.label + ":" + s.hash(m) + "]"
			}
			return "[" + r.label + "]"
		})
		if matched && r.action == ActionDrop {
			return "", false
		}
	}
	return out, true
}

// hash is the tenant-keyed HMAC-SHA256 of v, 16 hex digits.
func (s *Set) hash(v string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// field applies the rules to *p.
func (s *Set) field(p *string) bool {
	out, _ := s.String(*p)
	changed := out != *p
	*p = out
	return changed
}

// vars applies the rules to map values; a dropped value removes its key.
func (s *Set) vars(m map[string]string) bool {
	changed := false
	for k, v := range m {
		out, ok := s.String(v)
		switch {
		case !ok:
			delete(m, k)
			changed = true
		case out != v:
			m[k] = out
			changed = true
		}
	}
	return changed
}

// query applies the rules to the query string (after '?', before '#') of
// a URL; a drop removes the whole query string.
func (s *Set) query(p *string) bool {
	u := *p
	q := strings.IndexByte(u, '?')
	if q < 0 {
		return false
	}
	end := len(u)
	if h := strings.IndexByte(u[q:], '#'); h >= 0 {
		end = q + h
	}
	out, ok := s.String(u[q+1 : end])
	if !ok {
		*p = u[:q] + u[end:]
		return true
	}
	*p = u[:q+1] + out + u[end:]
	return *p != u
}

// Envelope applies the rules in place to the PII-bearing fields of env
// (docs/privacy.md lists them) and reports whether anything changed.
func (s *Set) Envelope(env *eventv1.Envelope) bool {
	if s.Empty() {
		return false
	}
	changed := false
	mark := func(c bool) { changed = changed || c }
	switch p := env.GetPayload().(type) {
	case *eventv1.Envelope_MessagePosted:
		if m := p.MessagePosted; m != nil {
			mark(s.field(&m.Text))
		}
	case *eventv1.Envelope_VariablesCaptured:
		if m := p.VariablesCaptured; m != nil {
			mark(s.vars(m.Variables))
		}
	case *eventv1.Envelope_LeadCaptured:
		if m := p.LeadCaptured; m != nil {
			mark(s.field(&m.Name))
			mark(s.field(&m.Email))
			mark(s.field(&m.Phone))
			mark(s.vars(m.Fields))
		}
	case *eventv1.Envelope_PageViewed:
		if m := p.PageViewed; m != nil {
			mark(s.query(&m.Url))
			mark(s.query(&m.Referrer))
		}
	case *eventv1.Envelope_ConversationStarted:
		if m := p.ConversationStarted; m != nil {
			mark(s.vars(m.Variables))
			mark(s.query(&m.PageUrl))
			mark(s.query(&m.Referrer))
			if v := m.Visitor; v != nil {
				mark(s.field(&v.DisplayName))
			}
		}
	}
	return changed
}
