// Package rules compiles and evaluates tagging rules: CEL expressions
// (cel.dev/cel-go, the language Kubernetes uses for validation rules) over a
// conversation's facts. It is pure and sandboxed: expressions can read only
// the variables `conversation` and `event`, call only CEL's standard library
// and the strings extension, and are bounded in length, nesting, regular
// expression size and evaluation cost. Regular expressions are RE2.
package rules

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging/internal/facts"
)

// Defaults of Options.
const (
	DefaultMaxExpressionBytes = 4096
	DefaultCostLimit          = 1_000_000
)

// Options bound what an expression may do.
type Options struct {
	// MaxExpressionBytes is the longest accepted expression
	// (DefaultMaxExpressionBytes when 0).
	MaxExpressionBytes int
	// CostLimit bounds one evaluation in CEL cost units, roughly one unit per
	// operation and per byte scanned (DefaultCostLimit when 0). An evaluation
	// over the limit fails, which counts as "no match".
	CostLimit uint64
}

// Engine compiles expressions. It is safe for concurrent use.
type Engine struct {
	env  *cel.Env
	opts Options
}

// NewEngine builds the CEL environment.
func NewEngine(o Options) (*Engine, error) {
	if o.MaxExpressionBytes <= 0 {
		o.MaxExpressionBytes = DefaultMaxExpressionBytes
	}
	if o.CostLimit == 0 {
		o.CostLimit = DefaultCostLimit
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
			cel.ValidateDurationLiterals(),
			cel.ValidateTimestampLiterals(),
			cel.ValidateComprehensionNestingLimit(2),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("rules: environment: %w", err)
	}
	return &Engine{env: env, opts: o}, nil
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
