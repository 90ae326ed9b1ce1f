package tagging_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/tenancy"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// newKey creates an API key of tenant holding scopes and returns a context
// that sends it and the key's id.
func (f *fixture) newKey(tenant string, scopes ...string) (context.Context, string) {
	f.t.Helper()
	ctx := context.Background()
	key, id, err := tenancy.NewStore(f.pool).CreateAPIKey(ctx, tenant, "test", []string{grpcx.ScopeRead})
	if err != nil {
		f.t.Fatal(err)
	}
	// Set the scopes directly: tenancy may not offer every scope yet.
	if _, err := f.pool.Exec(ctx, `UPDATE api_keys SET scopes = $2 WHERE key_id = $1`, id, scopes); err != nil {
		f.t.Fatal(err)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key), id
}

// TestRuleScopesAndActors: changing and testing rules needs the rules scope
// (admin implies it), reading them read; created_by and updated_by are the
// calling keys, whatever the request says.
func TestRuleScopesAndActors(t *testing.T) {
	f := start(t)
	c := evtest.New("acme", "c1")
	f.publish(c.Started("support"), c.Visitor("I want a refund"))
	f.settle()
	readCtx, _ := f.newKey("acme", grpcx.ScopeRead)
	rulesCtx, rulesID := f.newKey("acme", grpcx.ScopeRules)
	adminCtx, adminID := f.newKey("acme", grpcx.ScopeAdmin)

	test := &taggingv1.TestRuleRequest{ConversationId: "c1", Expression: refundExpr}
	_, err := f.client.TestRule(readCtx, test)
	assertCode(t, err, codes.PermissionDenied)
	rule := &taggingv1.Rule{RuleId: "r1", Name: "Refunds", Tag: "refund", Expression: refundExpr, CreatedBy: "someone else", UpdatedBy: "someone else"}
	_, err = f.client.CreateRule(readCtx, &taggingv1.CreateRuleRequest{Rule: rule})
	assertCode(t, err, codes.PermissionDenied)
	_, err = f.client.Backfill(readCtx, &taggingv1.BackfillRequest{RuleId: "r1"})
	if err == nil {
		_, err = recvAll(readCtx, f, "r1")
	}
	assertCode(t, err, codes.PermissionDenied)

	res, err := f.client.TestRule(rulesCtx, test)
	if err != nil || !res.Matched {
		t.Fatalf("TestRule with a rules key: %v %v", res, err)
	}
	if res, err := f.client.TestRule(adminCtx, test); err != nil || !res.Matched {
		t.Fatalf("TestRule with an admin key: %v %v", res, err)
	}
	created, err := f.client.CreateRule(rulesCtx, &taggingv1.CreateRuleRequest{Rule: rule})
	if err != nil || created.CreatedBy != "api-key:"+rulesID || created.UpdatedBy != "api-key:"+rulesID {
		t.Fatalf("CreateRule with a rules key: %v %v", created, err)
	}
	rule.Tag = "refund-request"
	updated, err := f.client.UpdateRule(adminCtx, &taggingv1.UpdateRuleRequest{Rule: rule})
	if err != nil || updated.CreatedBy != "api-key:"+rulesID || updated.UpdatedBy != "api-key:"+adminID || updated.Version != 2 {
		t.Fatalf("UpdateRule with an admin key: %v %v", updated, err)
	}
	_, err = f.client.SetRuleEnabled(readCtx, &taggingv1.SetRuleEnabledRequest{RuleId: "r1"})
	assertCode(t, err, codes.PermissionDenied)
	disabled, err := f.client.SetRuleEnabled(rulesCtx, &taggingv1.SetRuleEnabledRequest{RuleId: "r1"})
	if err != nil || disabled.Enabled || disabled.UpdatedBy != "api-key:"+rulesID {
		t.Fatalf("SetRuleEnabled: %v %v", disabled, err)
	}
	list, err := f.client.ListRules(readCtx, &taggingv1.ListRulesRequest{})
	if err != nil || len(list.Rules) != 1 || list.Rules[0].CreatedBy != "api-key:"+rulesID || list.Rules[0].UpdatedBy != "api-key:"+rulesID {
		t.Fatalf("ListRules with a read key: %v %v", list, err)
	}
	_, err = f.client.DeleteRule(readCtx, &taggingv1.DeleteRuleRequest{RuleId: "r1"})
	assertCode(t, err, codes.PermissionDenied)
	if _, err := f.client.DeleteRule(rulesCtx, &taggingv1.DeleteRuleRequest{RuleId: "r1"}); err != nil {
		t.Fatal(err)
	}
	// Labels and flags record the key too, not the request's by.
	if _, err := f.client.Flag(adminCtx, &taggingv1.FlagRequest{ConversationId: "c1", By: "ann", Note: "look"}); err != nil {
		t.Fatal(err)
	}
	f.settle()
	if got := summary(f.events("acme")); len(got) == 0 || got[len(got)-1] != "c1 flagged api-key:"+adminID+": look" {
		t.Fatalf("flag actor: %q", got)
	}
}

func recvAll(ctx context.Context, f *fixture, ruleID string) (*taggingv1.BackfillProgress, error) {
	st, err := f.client.Backfill(ctx, &taggingv1.BackfillRequest{RuleId: ruleID})
	if err != nil {
		return nil, err
	}
	var last *taggingv1.BackfillProgress
	for {
		p, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return last, nil
		}
		if err != nil {
			return last, err
		}
		last = p
	}
}

// pathological expressions each allocate or scan far more than the cost
// limit allows on the largest inputs.
var pathological = []string{
	`event.text.replace("", event.text).replace("", event.text).contains("x")`,
	`conversation.messages.exists(a, conversation.messages.exists(b, (a.text + b.text + event.text).matches("(a|b)+c")))`,
}

// TestExpensiveRulesAreRefusedByTheEstimate: Create, Update and Test refuse
// an expression whose estimated worst-case cost exceeds the limit, before
// running it, naming the field, the estimate and the limit; nothing is
// stored.
func TestExpensiveRulesAreRefusedByTheEstimate(t *testing.T) {
	f := start(t)
	c := evtest.New("acme", "c1")
	f.publish(c.Started("support"), c.Visitor("hello"))
	f.settle()
	ctx := f.ctx("acme")
	f.createRule("acme", "r1", "true", "everything")
	for _, expr := range pathological {
		_, err := f.client.CreateRule(ctx, &taggingv1.CreateRuleRequest{Rule: &taggingv1.Rule{RuleId: "bad", Name: "x", Tag: "x", Expression: expr}})
		assertField(t, err, "rule.expression", "estimated worst-case cost")
		assertField(t, err, "rule.expression", "exceeds the limit of 1000000")
		_, err = f.client.UpdateRule(ctx, &taggingv1.UpdateRuleRequest{Rule: &taggingv1.Rule{RuleId: "r1", Name: "x", Tag: "x", Expression: expr}})
		assertField(t, err, "rule.expression", "estimated worst-case cost")
		_, err = f.client.TestRule(ctx, &taggingv1.TestRuleRequest{ConversationId: "c1", Expression: expr})
		assertField(t, err, "expression", "estimated worst-case cost")
	}
	list, err := f.client.ListRules(ctx, &taggingv1.ListRulesRequest{})
	if err != nil || len(list.Rules) != 1 || list.Rules[0].Expression != "true" || list.Rules[0].Version != 1 {
		t.Fatalf("rules after refusals: %v %v", list, err)
	}
	// A lower limit refuses what the default allows.
	g := start(t, func(c *tagging.Config) { c.RuleCostLimit = 1000 })
	_, err = g.client.CreateRule(g.ctx("acme"), &taggingv1.CreateRuleRequest{Rule: &taggingv1.Rule{Name: "x", Tag: "x", Expression: refundExpr}})
	assertField(t, err, "rule.expression", "exceeds the limit of 1000 ")
}

// TestRulesPerTenantAreCapped: the 201st rule of a tenant is refused
// (ResourceExhausted) and nothing is stored; other tenants are not
// affected; deleting a rule makes room.
func TestRulesPerTenantAreCapped(t *testing.T) {
	f := start(t)
	ctx := f.ctx("acme")
	for i := range tagging.DefaultMaxRulesPerTenant {
		f.createRule("acme", fmt.Sprintf("r%d", i), "true", "t")
	}
	_, err := f.client.CreateRule(ctx, &taggingv1.CreateRuleRequest{Rule: &taggingv1.Rule{RuleId: "one-too-many", Name: "x", Tag: "x", Expression: "true"}})
	assertCode(t, err, codes.ResourceExhausted)
	if !strings.Contains(status.Convert(err).Message(), "PARLEY_TAGGING_MAX_RULES_PER_TENANT") {
		t.Fatalf("message: %v", err)
	}
	list, err := f.client.ListRules(ctx, &taggingv1.ListRulesRequest{})
	if err != nil || len(list.Rules) != tagging.DefaultMaxRulesPerTenant {
		t.Fatalf("ListRules: %d rules, %v", len(list.GetRules()), err)
	}
	f.createRule("globex", "g1", "true", "t")
	if _, err := f.client.DeleteRule(ctx, &taggingv1.DeleteRuleRequest{RuleId: "r0"}); err != nil {
		t.Fatal(err)
	}
	f.createRule("acme", "one-more", "true", "t")
}

// TestBackfillSlotsPerTenant: while one of acme's backfills runs, acme
// cannot start another (ResourceExhausted) and globex's backfill still
// starts and finishes.
func TestBackfillSlotsPerTenant(t *testing.T) {
	f := start(t) // two backfills at once, one per tenant
	a, g := evtest.New("acme", "a1"), evtest.New("globex", "g1")
	f.publish(a.Started("support"), a.Visitor("refund please"), g.Started("support"), g.Visitor("refund please"))
	f.settle()
	f.createRule("acme", "r", refundExpr, "refund")
	f.createRule("globex", "r", refundExpr, "refund")

	// Hold acme's tenant row: acme's backfill blocks when it writes its tags.
	ctx := context.Background()
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM tagging_tenants WHERE tenant_id = 'acme' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		p   *taggingv1.BackfillProgress
		err error
	}
	first := make(chan result, 1)
	go func() {
		p, err := recvAll(f.ctx("acme"), f, "r")
		first <- result{p, err}
	}()

	// Wait until it holds a slot: it waits for the row lock.
	for deadline := time.Now().Add(15 * time.Second); ; {
		var waiting int
		if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%tagging_tenants%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("acme's first backfill never reached its write")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cctx, cancel := context.WithTimeout(f.ctx("acme"), 3*time.Second)
	_, err = recvAll(cctx, f, "r")
	cancel()
	assertCode(t, err, codes.ResourceExhausted)
	gctx, cancel := context.WithTimeout(f.ctx("globex"), 15*time.Second)
	defer cancel()
	p, err := recvAll(gctx, f, "r")
	if err != nil || !p.GetDone() || p.TagsApplied != 1 {
		t.Fatalf("globex's backfill while acme's runs: %v %v", p, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-first:
		if r.err != nil || !r.p.GetDone() || r.p.TagsApplied != 1 {
			t.Fatalf("acme's first backfill: %v %v", r.p, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("acme's first backfill did not finish")
	}
}

// TestImpossibleDetectorSettingsAreRefused: a long-wait threshold whose
// duration would overflow (here it would wrap around to half a millisecond)
// is InvalidArgument, and nothing changes.
func TestImpossibleDetectorSettingsAreRefused(t *testing.T) {
	f := start(t)
	ctx := f.ctx("acme")
	before, err := f.client.GetDetectors(ctx, &taggingv1.GetDetectorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// 18446744073710 ms * 1e6 = 2^64 + 448384 ns.
	for _, ms := range []int64{18446744073710, math.MaxInt64, 30*24*3600*1000 + 1} {
		_, err = f.client.UpdateDetectors(ctx, &taggingv1.UpdateDetectorsRequest{Settings: &taggingv1.DetectorSettings{LongWaitMs: ms}})
		assertField(t, err, "settings.long_wait_ms", "between 0 and 2592000000")
	}
	after, err := f.client.GetDetectors(ctx, &taggingv1.GetDetectorsRequest{})
	if err != nil || !proto.Equal(before, after) {
		t.Fatalf("settings changed: %v -> %v (%v)", before, after, err)
	}
	if _, err := f.client.UpdateDetectors(ctx, &taggingv1.UpdateDetectorsRequest{Settings: &taggingv1.DetectorSettings{LongWaitMs: 30 * 24 * 3600 * 1000}}); err != nil {
		t.Fatalf("the largest threshold: %v", err)
	}
}

// TestDatabaseErrorsStayInTheLog: a database failure answers with the
// service's own words, never the driver's text (table names, SQLSTATE).
func TestDatabaseErrorsStayInTheLog(t *testing.T) {
	f := start(t)
	if _, err := f.pool.Exec(context.Background(), `ALTER TABLE tagging_rules RENAME TO tagging_rules_gone`); err != nil {
		t.Fatal(err)
	}
	_, err := f.client.ListRules(f.ctx("acme"), &taggingv1.ListRulesRequest{})
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.Internal || strings.Contains(msg, "tagging_rules") || strings.Contains(msg, "SQLSTATE") || strings.Contains(msg, "relation") {
		t.Fatalf("ListRules with the table gone: %v", err)
	}
	_, err = f.client.CreateRule(f.ctx("acme"), &taggingv1.CreateRuleRequest{Rule: &taggingv1.Rule{Name: "x", Tag: "x", Expression: "true"}})
	if msg := status.Convert(err).Message(); status.Code(err) != codes.Internal || strings.Contains(msg, "SQLSTATE") || strings.Contains(msg, "relation") {
		t.Fatalf("CreateRule with the table gone: %v", err)
	}
}

// TestStoredExpensiveRuleIsNotBackfilled: a rule stored before the estimate
// existed (here written directly) is not backfilled: FailedPrecondition
// asking to update it, with nothing of the compiler's or database's text.
func TestStoredExpensiveRuleIsNotBackfilled(t *testing.T) {
	f := start(t)
	c := evtest.New("acme", "c1")
	f.publish(c.Started("support"), c.Visitor("hello"))
	f.settle()
	f.createRule("acme", "old", "true", "t")
	if _, err := f.pool.Exec(context.Background(), `UPDATE tagging_rules SET expression = $1 WHERE tenant_id = 'acme' AND rule_id = 'old'`, pathological[0]); err != nil {
		t.Fatal(err)
	}
	_, err := recvAll(f.ctx("acme"), f, "old")
	assertCode(t, err, codes.FailedPrecondition)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "update its expression") || strings.Contains(msg, "estimated") {
		t.Fatalf("message: %q", msg)
	}
}
