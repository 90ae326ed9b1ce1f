// Package rules compiles and evaluates tagging rules: CEL expressions
// (cel.dev/cel-go, the language Kubernetes uses for validation rules) over a
// conversation's facts. It is pure and sandboxed: expressions can read only
// the variables `conversation` and `event`, call only CEL's standard library
// and the strings extension, and are bounded in length, nesting, regular
// expression size and evaluation cost. Regular expressions are RE2.
//
// The cost is bounded twice: Compile refuses an expression whose worst-case
// cost, estimated statically over the largest inputs the service can hold
// (see Options), exceeds the limit, so that nothing expensive (or a string
// function allocating megabytes) ever runs; and every evaluation stops at the
// limit in case an input is larger than assumed.
package rules

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
	"github.com/parley-dev/parley/libs/facts"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
)

// Defaults of Options.
const (
	DefaultMaxExpressionBytes = 4096
	DefaultCostLimit          = 1_000_000
	// DefaultEventTextBytes is ingest's default limit on a message text
	// (PARLEY_INGEST_MAX_TEXT_BYTES), the longest `event.text`.
	DefaultEventTextBytes = 16 << 10
)

// Options bound what an expression may do.
type Options struct {
	// MaxExpressionBytes is the longest accepted expression
	// (DefaultMaxExpressionBytes when 0).
	MaxExpressionBytes int
	// CostLimit bounds one evaluation in CEL cost units, roughly one unit per
	// operation and per byte scanned (DefaultCostLimit when 0). Compile
	// refuses an expression whose estimated worst case exceeds it; an
	// evaluation over it fails, which counts as "no match".
	CostLimit uint64
	// The input sizes the worst-case estimate assumes: MaxMessages is the
	// length of `conversation.messages` (facts.DefaultMaxMessages when 0),
	// EventTextBytes the longest `event.text` (DefaultEventTextBytes when
	// 0). The facts bound the rest: message texts in
	// `conversation.messages` to facts.MaxTextBytes, lists and maps to
	// facts.MaxListItems, every other string to facts.MaxFieldBytes.
	MaxMessages    int
	EventTextBytes int
}

// Engine compiles expressions. It is safe for concurrent use.
type Engine struct {
	env   *cel.Env
	opts  Options
	sizes sizes
}

// NewEngine builds the CEL environment.
func NewEngine(o Options) (*Engine, error) {
	if o.MaxExpressionBytes <= 0 {
		o.MaxExpressionBytes = DefaultMaxExpressionBytes
	}
	if o.CostLimit == 0 {
		o.CostLimit = DefaultCostLimit
	}
	if o.MaxMessages <= 0 {
		o.MaxMessages = facts.DefaultMaxMessages
	}
	if o.EventTextBytes <= 0 {
		o.EventTextBytes = DefaultEventTextBytes
	}
	env, err := cel.NewEnv(
		cel.Types(&taggingv1.RuleConversation{}, &taggingv1.RuleEvent{}),
		cel.Variable("conversation", cel.ObjectType("parley.tagging.v1.RuleConversation")),
		cel.Variable("event", cel.ObjectType("parley.tagging.v1.RuleEvent")),
		ext.Strings(),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		cel.ParserExpressionSizeLimit(o.MaxExpressionBytes),
		cel.ParserRecursionLimit(64),
		cel.ExpressionNodeLimit(2000),
		cel.RegexProgramSizeLimit(2000),
		cel.ASTValidators(
			regexValidator{},
			timeZoneValidator{},
			cel.ValidateDurationLiterals(),
			cel.ValidateTimestampLiterals(),
			cel.ValidateComprehensionNestingLimit(2),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("rules: environment: %w", err)
	}
	return &Engine{env: env, opts: o, sizes: sizes{
		messages: uint64(o.MaxMessages), stateText: facts.MaxTextBytes, eventText: uint64(o.EventTextBytes),
		field: facts.MaxFieldBytes, list: facts.MaxListItems,
	}}, nil
}

// CompileError is an invalid expression: where (1-based line and column, in
// characters) and what.
type CompileError struct {
	Line, Column int
	Message      string
}

func (e *CompileError) Error() string { return fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Message) }

// Program is a compiled expression.
type Program struct {
	prg cel.Program
	// reads is what the expression reads of `conversation`; event is
	// whether it reads `event`.
	reads facts.Fields
	event bool
}

// Needs reports whether the expression's value may differ after an event
// that changed the given fields from its value before: it reads `event`, or
// a changed field. An expression that reads neither keeps its value.
func (p *Program) Needs(changed facts.Fields) bool {
	return changed != 0 && (p.event || p.reads&changed != 0)
}

// Compile checks expr and prepares it for evaluation. Every failure is a
// *CompileError.
func (e *Engine) Compile(expr string) (*Program, error) {
	switch {
	case strings.TrimSpace(expr) == "":
		return nil, &CompileError{1, 1, "expression is empty"}
	case len(expr) > e.opts.MaxExpressionBytes:
		return nil, &CompileError{1, 1, fmt.Sprintf("expression is %d bytes long; the limit is %d", len(expr), e.opts.MaxExpressionBytes)}
	case !utf8.ValidString(expr):
		return nil, &CompileError{1, 1, "expression is not valid UTF-8"}
	}
	ast, iss := e.env.Compile(expr)
	if iss.Err() != nil {
		errs := iss.Errors()
		if len(errs) == 0 {
			return nil, &CompileError{1, 1, iss.Err().Error()}
		}
		first := errs[0]
		ce := &CompileError{Line: max(first.Location.Line(), 1), Column: max(first.Location.Column(), 0) + 1, Message: first.Message}
		if len(errs) > 1 {
			ce.Message += fmt.Sprintf(" (and %d more)", len(errs)-1)
		}
		return nil, ce
	}
	if out := ast.OutputType(); !out.IsExactType(types.BoolType) && !out.IsExactType(types.DynType) {
		return nil, &CompileError{1, 1, fmt.Sprintf("expression must evaluate to a bool, not %s", out)}
	}
	est, err := e.env.EstimateCost(ast, e.sizes)
	if err != nil {
		return nil, &CompileError{1, 1, "cannot estimate the expression's cost: " + err.Error()}
	}
	if est.Max > e.opts.CostLimit {
		return nil, &CompileError{1, 1, fmt.Sprintf("estimated worst-case cost %s exceeds the limit of %d (on %d messages of up to %d bytes, "+
			"an event text of up to %d bytes and other strings of up to %d bytes); scan less text or fewer messages",
			costString(est.Max), e.opts.CostLimit, e.sizes.messages, e.sizes.stateText, e.sizes.eventText, e.sizes.field)}
	}
	prg, err := e.env.Program(ast,
		cel.CostLimit(e.opts.CostLimit),
		cel.InterruptCheckFrequency(100),
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		return nil, &CompileError{1, 1, err.Error()}
	}
	reads, event := dependencies(ast.NativeRep())
	return &Program{prg: prg, reads: reads, event: event}, nil
}

func costString(c uint64) string {
	if c == math.MaxUint64 {
		return "unbounded"
	}
	return strconv.FormatUint(c, 10)
}

// sizes tells CEL's cost estimator the largest inputs an expression can
// see: the bounds facts keeps and ingest's limit on a message text.
type sizes struct {
	messages, stateText, eventText, field, list uint64
}

// EstimateSize implements cost.Estimator by field path
// (conversation.messages.@items.text, event.text, ...) and type.
func (s sizes) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	upTo := func(max uint64) *cost.SizeEstimate {
		sz := cost.RangedSizeEstimate(0, max)
		return &sz
	}
	p := n.Path()
	if len(p) == 0 {
		// A value computed by the expression that CEL could not size
		// (e.g. the items of a filtered list): the largest of each kind.
		if t := n.Type(); t != nil {
			switch t.Kind() {
			case types.StringKind, types.BytesKind:
				return upTo(max(s.stateText, s.eventText, s.field))
			case types.ListKind, types.MapKind:
				return upTo(max(s.messages, s.list))
			}
		}
		return nil
	}
	switch {
	case slices.Equal(p, []string{"conversation", "messages"}):
		return upTo(s.messages)
	case slices.Equal(p, []string{"conversation", "messages", "@items", "text"}):
		return upTo(s.stateText)
	case slices.Equal(p, []string{"event", "text"}):
		return upTo(s.eventText)
	}
	t := n.Type()
	if t == nil {
		return nil
	}
	switch t.Kind() {
	case types.StringKind, types.BytesKind:
		return upTo(s.field)
	case types.ListKind, types.MapKind:
		return upTo(s.list)
	}
	return nil
}

// EstimateCallCost implements cost.Estimator: CEL's own cost models.
func (sizes) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

// dependencies finds the fields of `conversation` an expression reads
// (conversation.<field>, with or without has()) and whether it reads
// `event`. Any other use of `conversation` (passing it whole, or an
// iteration variable of that name) counts as reading every field.
func dependencies(a *celast.AST) (facts.Fields, bool) {
	var reads facts.Fields
	event := false
	for _, id := range celast.MatchDescendants(celast.NavigateAST(a), celast.KindMatcher(celast.IdentKind)) {
		switch id.AsIdent() {
		case "event":
			event = true
		case "conversation":
			parent, ok := id.Parent()
			if ok && parent.Kind() == celast.SelectKind && parent.AsSelect().Operand().ID() == id.ID() {
				reads |= facts.Field(parent.AsSelect().FieldName())
			} else {
				reads = facts.AllFields
			}
		}
	}
	return reads, event
}

// Input is one evaluation's variables; build it once per event and evaluate
// every rule with it.
type Input struct {
	act cel.Activation
}

// NewInput binds conversation and event. ev may be nil (an empty event).
func NewInput(c *taggingv1.RuleConversation, ev *taggingv1.RuleEvent) Input {
	if ev == nil {
		ev = &taggingv1.RuleEvent{}
	}
	act, _ := cel.NewActivation(map[string]any{"conversation": c, "event": ev})
	return Input{act: act}
}

// ErrNotBool is returned when an expression of dynamic type yields a value
// that is not a bool.
var ErrNotBool = errors.New("rules: expression did not yield a bool")

// Eval evaluates p. An error (a missing map key, the cost limit, a
// cancelled ctx) means the rule did not match.
func (p *Program) Eval(ctx context.Context, in Input) (bool, error) {
	var val ref.Val
	var err error
	if ctx.Done() == nil {
		// Nothing can cancel it; the cost limit bounds it.
		val, _, err = p.prg.Eval(in.act)
	} else {
		val, _, err = p.prg.ContextEval(ctx, in.act)
	}
	if err != nil {
		return false, fmt.Errorf("rules: %w", err)
	}
	b, ok := val.Value().(bool)
	if !ok {
		return false, ErrNotBool
	}
	return b, nil
}

// regexValidator refuses constant patterns of matches() that RE2 cannot
// compile, pointing at the pattern and saying why (cel-go's own validator
// only says "invalid matches argument").
type regexValidator struct{}

func (regexValidator) Name() string { return "parley.validator.matches" }

func (regexValidator) Validate(_ *cel.Env, _ cel.ValidatorConfig, a *celast.AST, iss *cel.Issues) {
	for _, call := range celast.MatchDescendants(celast.NavigateAST(a), celast.FunctionMatcher("matches")) {
		c := call.AsCall()
		i := 1
		if c.IsMemberFunction() {
			i = 0
		}
		if len(c.Args()) <= i || c.Args()[i].Kind() != celast.LiteralKind {
			continue
		}
		pattern, ok := c.Args()[i].AsLiteral().Value().(string)
		if !ok {
			continue
		}
		if _, err := regexp.Compile(pattern); err != nil {
			iss.ReportErrorAtID(c.Args()[i].ID(), "invalid regular expression: %s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
	}
}

// timeZoneValidator refuses constant time zones of the timestamp accessors
// (getHours("Mars/Olympus")) that evaluation could never resolve: such a
// rule would fail on every event.
type timeZoneValidator struct{}

func (timeZoneValidator) Name() string { return "parley.validator.time_zone" }

func (timeZoneValidator) Validate(_ *cel.Env, _ cel.ValidatorConfig, a *celast.AST, iss *cel.Issues) {
	accessors := []string{"getFullYear", "getMonth", "getDayOfYear", "getDate", "getDayOfMonth", "getDayOfWeek",
		"getHours", "getMinutes", "getSeconds", "getMilliseconds"}
	for _, fn := range accessors {
		for _, call := range celast.MatchDescendants(celast.NavigateAST(a), celast.FunctionMatcher(fn)) {
			c := call.AsCall()
			if !c.IsMemberFunction() || len(c.Args()) != 1 || c.Args()[0].Kind() != celast.LiteralKind {
				continue
			}
			tz, ok := c.Args()[0].AsLiteral().Value().(string)
			if !ok {
				continue
			}
			if err := checkTimeZone(tz); err != nil {
				iss.ReportErrorAtID(c.Args()[0].ID(), "unknown time zone %q: %s", tz, err)
			}
		}
	}
}

// checkTimeZone accepts what CEL's timestamp accessors accept: an IANA
// name or an offset [+-]HH:MM within a day.
func checkTimeZone(tz string) error {
	h, m, offset := strings.Cut(tz, ":")
	if !offset {
		if _, err := time.LoadLocation(tz); err != nil {
			return errors.New("not an IANA time zone name (e.g. Europe/Berlin) or an offset (+02:00)")
		}
		return nil
	}
	hr, err1 := strconv.Atoi(h)
	mi, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hr < -23 || hr > 23 || mi < 0 || mi > 59 {
		return errors.New("an offset is [+-]HH:MM, hours -23 to 23, minutes 0 to 59")
	}
	return nil
}
