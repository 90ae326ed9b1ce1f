package tagging_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// previewConv is one conversation of TestPreviewRule: visitor messages
// recorded 30 days ago (old) and an hour ago (recent); it starts in the
// older part when it has one.
type previewConv struct {
	id, bot     string
	old, recent int
}

// at re-dates an event: recorded (and occurred) at t.
func at(env *eventv1.Envelope, t time.Time) *eventv1.Envelope {
	env.RecordedAt, env.OccurredAt = timestamppb.New(t), timestamppb.New(t)
	return env
}

// TestPreviewRule: PreviewRule replays the conversations that began within
// the window against a candidate expression and counts those that would
// gain or lose the rule's tag (compared with what live tagging applied),
// over gRPC and HTTP/JSON, scoped to the tenant, emitting nothing and
// changing nothing; bad input names its field.
func TestPreviewRule(t *testing.T) {
	httpAddr, _ := testsvc.Addrs(t)
	f := start(t, func(c *tagging.Config) { c.HTTPAddr = httpAddr })
	ctx := f.ctx("acme")
	const current, candidate = `conversation.visitor_messages >= 2`, `conversation.visitor_messages >= 3 || conversation.bot_id == "sales"`
	f.createRule("acme", "chatty", current, "chatty")

	now := time.Now()
	convs := []previewConv{
		{"w1", "support", 0, 1}, {"w2", "sales", 0, 1}, {"w3", "support", 0, 2}, {"w4", "support", 0, 3},
		{"w5", "sales", 0, 2}, {"w6", "support", 0, 2}, {"w7", "support", 0, 0},
		{"o1", "support", 3, 0}, {"o2", "sales", 1, 0}, {"o3", "support", 2, 0},
		// Began a month ago, continues now: outside a 7-day window.
		{"s1", "support", 1, 2}, {"s2", "sales", 1, 0},
	}
	// Every old event first, then the recent ones (ingest records in
	// stream order).
	builders := map[string]*evtest.Conv{}
	for _, c := range convs {
		if c.old > 0 {
			cv := evtest.New("acme", c.id)
			builders[c.id] = cv
			f.publish(at(cv.Started(c.bot), now.Add(-30*24*time.Hour)))
			for i := range c.old {
				f.publish(at(cv.Visitor(fmt.Sprintf("old question %d", i)), now.Add(-30*24*time.Hour)))
			}
		}
	}
	f.settle()
	for _, c := range convs {
		cv := builders[c.id]
		if cv == nil {
			cv = evtest.New("acme", c.id)
			f.publish(at(cv.Started(c.bot), now.Add(-time.Hour)))
		}
		for i := range c.recent {
			f.publish(at(cv.Visitor(fmt.Sprintf("question %d", i)), now.Add(-time.Hour)))
		}
	}
	// Another tenant's conversation, which the candidate would match.
	gl := evtest.New("globex", "g1")
	f.publish(at(gl.Started("sales"), now.Add(-time.Hour)), at(gl.Visitor("hi"), now.Add(-time.Hour)))
	f.settle()

	// Expected, from the conversations as built.
	want := func(days int, ruleTags bool) *taggingv1.PreviewRuleResponse {
		since := now.Add(-time.Duration(days) * 24 * time.Hour)
		w := &taggingv1.PreviewRuleResponse{}
		for _, c := range convs {
			began := now.Add(-time.Hour)
			if c.old > 0 {
				began = now.Add(-30 * 24 * time.Hour)
			}
			if began.Before(since) {
				continue
			}
			n := c.old + c.recent
			tagged, matched := ruleTags && n >= 2, n >= 3 || c.bot == "sales"
			w.ConversationsScanned++
			if matched {
				w.ConversationsMatched++
			}
			switch {
			case matched && !tagged:
				w.Gained++
				w.GainedSample = append(w.GainedSample, c.id)
			case tagged && !matched:
				w.Lost++
				w.LostSample = append(w.LostSample, c.id)
			}
		}
		slices.Sort(w.GainedSample)
		slices.Sort(w.LostSample)
		return w
	}
	check := func(name string, got, want *taggingv1.PreviewRuleResponse, version int64) {
		t.Helper()
		if got.ConversationsScanned != want.ConversationsScanned || got.ConversationsMatched != want.ConversationsMatched ||
			got.Gained != want.Gained || got.Lost != want.Lost || !slices.Equal(got.GainedSample, want.GainedSample) ||
			!slices.Equal(got.LostSample, want.LostSample) || got.RuleVersion != version {
			t.Fatalf("%s:\n got  %v\n want %v (rule version %d)", name, got, want, version)
		}
	}

	before := f.events("acme")
	var applied int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM tagging_applied`).Scan(&applied); err != nil {
		t.Fatal(err)
	}

	// A changed version of the rule, default window (7 days).
	got, err := f.client.PreviewRule(ctx, &taggingv1.PreviewRuleRequest{RuleId: "chatty", Expression: candidate})
	if err != nil {
		t.Fatal(err)
	}
	check("7 days", got, want(7, true), 1)
	if since := got.GetSince().AsTime(); since.Before(now.Add(-7*24*time.Hour-time.Minute)) || since.After(time.Now().Add(-7*24*time.Hour)) {
		t.Fatalf("since %v, want 7 days ago", since)
	}
	if got.EventsScanned == 0 {
		t.Fatal("no events scanned")
	}
	// 40 days take in the older conversations.
	got, err = f.client.PreviewRule(ctx, &taggingv1.PreviewRuleRequest{RuleId: "chatty", Expression: candidate, Days: 40})
	if err != nil {
		t.Fatal(err)
	}
	check("40 days", got, want(40, true), 1)
	// A new rule tags nothing today: every match is a gain.
	got, err = f.client.PreviewRule(ctx, &taggingv1.PreviewRuleRequest{Expression: candidate, Days: 40})
	if err != nil {
		t.Fatal(err)
	}
	check("new rule", got, want(40, false), 0)

	// HTTP/JSON: the same answer.
	body := []byte(`{"rule_id":"chatty","expression":` + fmt.Sprintf("%q", candidate) + `,"days":40}`)
	req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/v1/rules:preview", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.keys["acme"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, raw)
	}
	hg := &taggingv1.PreviewRuleResponse{}
	if err := protojson.Unmarshal(raw, hg); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	check("HTTP", hg, want(40, true), 1)

	// Nothing emitted, nothing changed.
	time.Sleep(300 * time.Millisecond)
	f.settle()
	if after := f.events("acme"); len(after) != len(before) {
		t.Fatalf("preview emitted %d events", len(after)-len(before))
	}
	var appliedAfter int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM tagging_applied`).Scan(&appliedAfter); err != nil {
		t.Fatal(err)
	}
	rs, err := f.client.ListRules(ctx, &taggingv1.ListRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if appliedAfter != applied || len(rs.Rules) != 1 || rs.Rules[0].Version != 1 || rs.Rules[0].Expression != current {
		t.Fatalf("state changed: applied %d -> %d, rules %v", applied, appliedAfter, rs.Rules)
	}

	// Another tenant sees only its own conversations and not acme's rule.
	gg, err := f.client.PreviewRule(f.ctx("globex"), &taggingv1.PreviewRuleRequest{Expression: candidate})
	if err != nil {
		t.Fatal(err)
	}
	if gg.ConversationsScanned != 1 || gg.Gained != 1 || !slices.Equal(gg.GainedSample, []string{"g1"}) {
		t.Fatalf("globex: %v", gg)
	}
	_, err = f.client.PreviewRule(f.ctx("globex"), &taggingv1.PreviewRuleRequest{RuleId: "chatty", Expression: candidate})
	assertCode(t, err, codes.NotFound)

	// Bad input names the field; the rules scope is needed.
	_, err = f.client.PreviewRule(ctx, &taggingv1.PreviewRuleRequest{Expression: candidate, Days: 91})
	assertField(t, err, "days", "between 1 and 90")
	_, err = f.client.PreviewRule(ctx, &taggingv1.PreviewRuleRequest{Expression: candidate, Days: -1})
	assertField(t, err, "days", "between 1 and 90")
	_, err = f.client.PreviewRule(ctx, &taggingv1.PreviewRuleRequest{Expression: "conversation.nope +"})
	assertField(t, err, "expression", "")
	_, err = f.client.PreviewRule(ctx, &taggingv1.PreviewRuleRequest{Expression: pathological[0]})
	assertField(t, err, "expression", "estimated worst-case cost")
	_, err = f.client.PreviewRule(ctx, &taggingv1.PreviewRuleRequest{RuleId: "no such/rule", Expression: candidate})
	assertField(t, err, "rule_id", "1-64")
	readCtx, _ := f.newKey("acme", grpcx.ScopeRead)
	_, err = f.client.PreviewRule(readCtx, &taggingv1.PreviewRuleRequest{Expression: candidate})
	assertCode(t, err, codes.PermissionDenied)
	rulesCtx, _ := f.newKey("acme", grpcx.ScopeRules)
	if _, err := f.client.PreviewRule(rulesCtx, &taggingv1.PreviewRuleRequest{Expression: candidate}); err != nil {
		t.Fatalf("rules scope: %v", err)
	}
}
