package ingest_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const piiSecret = "test-pii-secret"

// maskFixture is ingest with a PII secret, tenants acme and globex, each
// with an ingest key and an admin key.
type maskFixture struct {
	*fixture
	masking ingestv1.MaskingServiceClient
	keys    map[string]string // "<tenant>/<scope>" -> key
}

func startMasking(t testing.TB, opts ...func(*ingest.Config)) *maskFixture {
	t.Helper()
	var addr string
	f := start(t, append([]func(*ingest.Config){func(c *ingest.Config) {
		c.PIISecret = piiSecret
		c.MaxTextBytes = 1000
	}}, append(opts, func(c *ingest.Config) { addr = c.GRPCAddr })...)...)
	ctx := context.Background()
	if err := f.store.CreateTenant(ctx, "globex", ""); err != nil {
		t.Fatal(err)
	}
	m := &maskFixture{fixture: f, masking: ingestv1.NewMaskingServiceClient(testsvc.Dial(t, addr)), keys: map[string]string{"acme/ingest": f.key}}
	for _, k := range []struct{ tenant, scope string }{{"acme", grpcx.ScopeAdmin}, {"globex", grpcx.ScopeAdmin}, {"globex", grpcx.ScopeIngest}} {
		key, _, err := f.store.CreateAPIKey(ctx, k.tenant, "test", []string{k.scope})
		if err != nil {
			t.Fatal(err)
		}
		m.keys[k.tenant+"/"+k.scope] = key
	}
	return m
}

func (m *maskFixture) as(tenant, scope string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+m.keys[tenant+"/"+scope])
}

func (m *maskFixture) put(t testing.TB, tenant string, r *ingestv1.MaskingRule) {
	t.Helper()
	if _, err := m.masking.PutMaskingRule(m.as(tenant, grpcx.ScopeAdmin), &ingestv1.PutMaskingRuleRequest{Rule: r}); err != nil {
		t.Fatalf("put %s: %v", r.Id, err)
	}
}

func (m *maskFixture) del(t *testing.T, tenant, id string) {
	t.Helper()
	if _, err := m.masking.DeleteMaskingRule(m.as(tenant, grpcx.ScopeAdmin), &ingestv1.DeleteMaskingRuleRequest{Id: id}); err != nil {
		t.Fatalf("delete %s: %v", id, err)
	}
}

// appendAs appends events as tenant and returns what the log stored for
// them, in order.
func (m *maskFixture) appendAs(t *testing.T, tenant string, events ...*eventv1.Envelope) []*eventv1.Envelope {
	t.Helper()
	before := len(m.stored(t))
	sent := make([]*eventv1.Envelope, len(events))
	for i, e := range events {
		sent[i] = proto.Clone(e).(*eventv1.Envelope)
	}
	if _, err := m.client.Append(m.as(tenant, grpcx.ScopeIngest), &ingestv1.AppendRequest{Events: sent}); err != nil {
		t.Fatal(err)
	}
	all := m.stored(t)
	if len(all) != before+len(events) {
		t.Fatalf("stored %d events, want %d", len(all)-before, len(events))
	}
	return all[before:]
}

// sameExceptServerFields compares a stored envelope with the expected one,
// taking over only the fields ingest sets on every event.
func sameExceptServerFields(t *testing.T, got, want *eventv1.Envelope) {
	t.Helper()
	want = proto.Clone(want).(*eventv1.Envelope)
	want.TenantId, want.EventId, want.CorrelationId, want.Kind = got.TenantId, got.EventId, got.CorrelationId, got.Kind
	want.OccurredAt, want.RecordedAt, want.Producer = got.OccurredAt, got.RecordedAt, got.Producer
	if !proto.Equal(got, want) {
		t.Fatalf("stored\n%v\nwant\n%v", got, want)
	}
}

func msg(conv, text string) *eventv1.Envelope { return visitor(conv, text) }

func vars(conv string, kv map[string]string) *eventv1.Envelope {
	return &eventv1.Envelope{ConversationId: conv, Payload: &eventv1.Envelope_VariablesCaptured{VariablesCaptured: &eventv1.VariablesCaptured{Variables: kv}}}
}

// hmacHex is the expected hash token: HMAC-SHA256 under the tenant's key,
// which is HMAC-SHA256(secret, "parley-mask-hash" 0x00 tenant) (docs/privacy.md).
func hmacHex(tenant, value string) string {
	k := hmac.New(sha256.New, []byte(piiSecret))
	k.Write([]byte("parley-mask-hash\x00" + tenant))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

func TestMaskingChangesOnlyMaskedParts(t *testing.T) {
	m := startMasking(t)
	m.put(t, "acme", &ingestv1.MaskingRule{Id: "emails", Detector: "email", Action: "mask"})
	m.put(t, "acme", &ingestv1.MaskingRule{Id: "cards", Detector: "card", Action: "mask"})

	const text = "Hi, I am jane.doe@example.com; card 4111 1111 1111 1111 and order 1234567812345678, call +49 30 1234567"
	lead := &eventv1.Envelope{ConversationId: "m1", Payload: &eventv1.Envelope_LeadCaptured{LeadCaptured: &eventv1.LeadCaptured{
		LeadId: "l1", Name: "Jane", Email: "jane.doe@example.com", Phone: "+49 30 1234567", Fields: map[string]string{"card": "5500-0000-0000-0004", "note": "vip"}}}}
	page := &eventv1.Envelope{ConversationId: "m1", Payload: &eventv1.Envelope_PageViewed{PageViewed: &eventv1.PageViewed{
		Url: "https://shop.example/a@b.example?u=a@b.example&x=1#c@d.example", Title: "me@x.example"}}}
	in := []*eventv1.Envelope{msg("m1", text), vars("m1", map[string]string{"mail": "x@y.example", "city": "Berlin"}), lead, page, msg("m1", "nothing to hide 4111")}
	got := m.appendAs(t, "acme", in...)

	want := []*eventv1.Envelope{
		msg("m1", "Hi, I am [email]; card [card] and order 1234567812345678, call +49 30 1234567"),
		vars("m1", map[string]string{"mail": "[email]", "city": "Berlin"}),
		{ConversationId: "m1", Payload: &eventv1.Envelope_LeadCaptured{LeadCaptured: &eventv1.LeadCaptured{
			LeadId: "l1", Name: "Jane", Email: "[email]", Phone: "+49 30 1234567", Fields: map[string]string{"card": "[card]", "note": "vip"}}}},
		// Only the query string of URLs: path, fragment and title are kept.
		{ConversationId: "m1", Payload: &eventv1.Envelope_PageViewed{PageViewed: &eventv1.PageViewed{
			Url: "https://shop.example/a@b.example?u=[email]&x=1#c@d.example", Title: "me@x.example"}}},
		in[4],
	}
	for i := range want {
		sameExceptServerFields(t, got[i], want[i])
	}
}

func TestMaskingHashDropCustom(t *testing.T) {
	m := startMasking(t)
	for _, tenant := range []string{"acme", "globex"} {
		m.put(t, tenant, &ingestv1.MaskingRule{Id: "emails", Detector: "email", Action: "hash"})
	}
	a := m.appendAs(t, "acme", msg("h1", "a@b.example"), msg("h1", "again a@b.example"), msg("h1", "c@d.example"))
	g := m.appendAs(t, "globex", msg("h1", "a@b.example"))
	texts := func(envs []*eventv1.Envelope) (out []string) {
		for _, e := range envs {
			out = append(out, e.GetMessagePosted().GetText())
		}
		return out
	}
	at, gt := texts(a), texts(g)
	wantA := []string{"[email:" + hmacHex("acme", "a@b.example") + "]", "again [email:" + hmacHex("acme", "a@b.example") + "]", "[email:" + hmacHex("acme", "c@d.example") + "]"}
	for i := range wantA {
		if at[i] != wantA[i] {
			t.Fatalf("acme %d: %q, want %q", i, at[i], wantA[i])
		}
	}
	if want := "[email:" + hmacHex("globex", "a@b.example") + "]"; gt[0] != want || gt[0] == at[0] {
		t.Fatalf("globex: %q, want %q (and unlike acme's %q)", gt[0], want, at[0])
	}

	m.del(t, "acme", "emails")
	m.put(t, "acme", &ingestv1.MaskingRule{Id: "phones", Detector: "phone", Action: "drop"})
	m.put(t, "acme", &ingestv1.MaskingRule{Id: "orders", Detector: "custom", Pattern: `ORD-[0-9]{6}`, Action: "mask"})
	in := []*eventv1.Envelope{
		msg("d1", "call me on +44 20 7946 0958 please"),
		vars("d1", map[string]string{"phone": "0049 170 1234567", "plan": "gold", "ref": "ORD-123456"}),
		msg("d1", "about ORD-123456 and ORD-12345, a@b.example"),
	}
	got := m.appendAs(t, "acme", in...)
	want := []*eventv1.Envelope{msg("d1", ""), vars("d1", map[string]string{"plan": "gold", "ref": "[orders]"}), msg("d1", "about [orders] and ORD-12345, a@b.example")}
	for i := range want {
		sameExceptServerFields(t, got[i], want[i])
	}
}

func TestMaskingRulesAPI(t *testing.T) {
	m := startMasking(t)
	m.appendAs(t, "acme", msg("r1", "write to a@b.example"), msg("r1", "no pii here"), msg("r2", "x@y.example and z@w.example"))
	m.appendAs(t, "globex", msg("r1", "other@tenant.example"))
	ctx := m.as("acme", grpcx.ScopeAdmin)

	// Dry run: shows the changes on acme's messages only, stores nothing.
	storedBefore := m.stored(t)
	res, err := m.masking.DryRunMaskingRule(ctx, &ingestv1.DryRunMaskingRuleRequest{Rule: &ingestv1.MaskingRule{Id: "e", Detector: "email", Action: "mask"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Examined != 3 || len(res.Changes) != 2 || res.Changes[0].After != "write to [email]" || res.Changes[1].Before != "x@y.example and z@w.example" || res.Changes[1].After != "[email] and [email]" || res.Changes[1].ConversationId != "r2" {
		t.Fatalf("dry run: %v", res)
	}
	if after := m.stored(t); len(after) != len(storedBefore) || !proto.Equal(after[0], storedBefore[0]) {
		t.Fatal("dry run changed the log")
	}
	list, err := m.masking.ListMaskingRules(ctx, &ingestv1.ListMaskingRulesRequest{})
	if err != nil || len(list.Rules) != 0 {
		t.Fatalf("dry run stored a rule: %v %v", list, err)
	}
	// With limit 1: the most recent message only.
	res, err = m.masking.DryRunMaskingRule(ctx, &ingestv1.DryRunMaskingRuleRequest{Limit: 1, Rule: &ingestv1.MaskingRule{Id: "e", Detector: "email", Action: "drop"}})
	if err != nil || res.Examined != 1 || len(res.Changes) != 1 || res.Changes[0].After != "" || res.Changes[0].ConversationId != "r2" {
		t.Fatalf("dry run limit 1: %v %v", res, err)
	}

	// Bad input names the field and stores nothing.
	for _, c := range []struct {
		rule  *ingestv1.MaskingRule
		field string
	}{
		{&ingestv1.MaskingRule{Id: "x", Detector: "custom", Pattern: `(a`, Action: "mask"}, "rule.pattern"},
		{&ingestv1.MaskingRule{Id: "x", Detector: "custom", Pattern: strings.Repeat("a", 257), Action: "mask"}, "rule.pattern"},
		{&ingestv1.MaskingRule{Id: "x", Detector: "custom", Pattern: `a*`, Action: "mask"}, "rule.pattern"},
		{&ingestv1.MaskingRule{Id: "x", Detector: "ssn", Action: "mask"}, "rule.detector"},
		{&ingestv1.MaskingRule{Id: "x", Detector: "email", Action: "encrypt"}, "rule.action"},
		{&ingestv1.MaskingRule{Id: "X Y", Detector: "email", Action: "mask"}, "rule.id"},
		{nil, "rule"},
	} {
		_, err := m.masking.PutMaskingRule(ctx, &ingestv1.PutMaskingRuleRequest{Rule: c.rule})
		assertField(t, err, c.field)
		_, err = m.masking.DryRunMaskingRule(ctx, &ingestv1.DryRunMaskingRuleRequest{Rule: c.rule})
		assertField(t, err, c.field)
	}
	_, err = m.masking.DryRunMaskingRule(ctx, &ingestv1.DryRunMaskingRuleRequest{Limit: 101, Rule: &ingestv1.MaskingRule{Id: "e", Detector: "email", Action: "mask"}})
	assertField(t, err, "limit")

	// CRUD, scoped by tenant; admin scope needed.
	m.put(t, "acme", &ingestv1.MaskingRule{Id: "e", Detector: "email", Action: "mask"})
	m.put(t, "acme", &ingestv1.MaskingRule{Id: "e", Detector: "email", Action: "hash"})
	list, err = m.masking.ListMaskingRules(ctx, &ingestv1.ListMaskingRulesRequest{})
	if err != nil || len(list.Rules) != 1 || list.Rules[0].Action != "hash" {
		t.Fatalf("list: %v %v", list, err)
	}
	if list, err = m.masking.ListMaskingRules(m.as("globex", grpcx.ScopeAdmin), &ingestv1.ListMaskingRulesRequest{}); err != nil || len(list.Rules) != 0 {
		t.Fatalf("globex sees acme's rules: %v %v", list, err)
	}
	if _, err := m.masking.DeleteMaskingRule(m.as("globex", grpcx.ScopeAdmin), &ingestv1.DeleteMaskingRuleRequest{Id: "e"}); status.Code(err) != codes.NotFound {
		t.Fatalf("globex deleting acme's rule: %v", err)
	}
	if _, err := m.masking.ListMaskingRules(m.as("acme", grpcx.ScopeIngest), &ingestv1.ListMaskingRulesRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ingest key: %v", err)
	}
	for i := 0; i < 19; i++ {
		m.put(t, "acme", &ingestv1.MaskingRule{Id: "r" + string(rune('a'+i)), Detector: "email", Action: "mask"})
	}
	_, err = m.masking.PutMaskingRule(ctx, &ingestv1.PutMaskingRuleRequest{Rule: &ingestv1.MaskingRule{Id: "one-too-many", Detector: "email", Action: "mask"}})
	assertField(t, err, "rule.id")

	// Changes are audited, reads (list, dry run) are not.
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := m.store.ListAudit(context.Background(), tenancy.AuditFilter{TenantID: "acme", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		methods := map[string]int{}
		for _, e := range entries {
			methods[e.Method[strings.LastIndexByte(e.Method, '/')+1:]]++
		}
		if methods["PutMaskingRule"] >= 22 {
			if methods["ListMaskingRules"] != 0 || methods["DryRunMaskingRule"] != 0 {
				t.Fatalf("reads audited: %v", methods)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit log: %v", methods)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKeyedDisplayNameThroughIngest: the stored name is the tenant-keyed
// one (recomputed here from the documented derivation), different per
// tenant for the same token; a visitor name the client set is masked.
func TestKeyedDisplayNameThroughIngest(t *testing.T) {
	m := startMasking(t)
	m.put(t, "acme", &ingestv1.MaskingRule{Id: "emails", Detector: "email", Action: "mask"})
	started := func(conv, token, name string) *eventv1.Envelope {
		return &eventv1.Envelope{ConversationId: conv, Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{
			Visitor: &eventv1.Visitor{Token: token, DisplayName: name}, PageUrl: "https://x.example/p?email=v@w.example"}}}
	}
	words := func(tenant, token string) string {
		k := hmac.New(sha256.New, []byte(piiSecret))
		k.Write([]byte("parley-display-name\x00" + tenant))
		h := hmac.New(sha256.New, k.Sum(nil))
		h.Write([]byte(token))
		return fmt.Sprintf("%d %d %d", h.Sum(nil)[0]%64, h.Sum(nil)[1]%64, binary.BigEndian.Uint64(h.Sum(nil)[2:10])%9999+1)
	}
	a := m.appendAs(t, "acme", started("n1", "tok-1", ""), started("n2", "tok-2", "jane@doe.example"))
	g := m.appendAs(t, "globex", started("n1", "tok-1", ""))
	an, gn := a[0].GetConversationStarted().GetVisitor().GetDisplayName(), g[0].GetConversationStarted().GetVisitor().GetDisplayName()
	if an == "" || an == gn || !strings.HasSuffix(an, " "+strings.Fields(words("acme", "tok-1"))[2]) || !strings.HasSuffix(gn, " "+strings.Fields(words("globex", "tok-1"))[2]) {
		t.Fatalf("names acme %q globex %q; numbers want %s / %s", an, gn, words("acme", "tok-1"), words("globex", "tok-1"))
	}
	if cs := a[1].GetConversationStarted(); cs.GetVisitor().GetDisplayName() != "[email]" || cs.GetPageUrl() != "https://x.example/p?email=[email]" {
		t.Fatalf("client-set name and page URL not masked: %v", cs)
	}
	if g[0].GetConversationStarted().GetPageUrl() != "https://x.example/p?email=v@w.example" {
		t.Fatal("globex has no rules, yet its page URL changed")
	}
}
