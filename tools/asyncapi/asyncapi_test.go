package asyncapi_test

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/parley-dev/parley/tools/asyncapi"
	"go.yaml.in/yaml/v3"
)

// TestDocIsCurrent regenerates docs/asyncapi.yaml and fails when the
// committed file differs: run `make asyncapi` and commit the result.
func TestDocIsCurrent(t *testing.T) {
	want, err := asyncapi.Generate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("docs/asyncapi.yaml is stale: run make asyncapi")
	}
}

// TestDocNamesEveryKind parses the committed document and checks that it
// describes every event kind docs/events.md documents, with a message, a
// subject token and a payload schema, and that every $ref resolves.
func TestDocNamesEveryKind(t *testing.T) {
	raw, err := os.ReadFile("../../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/asyncapi.yaml does not parse: %v", err)
	}
	if doc["asyncapi"] != "2.6.0" {
		t.Fatalf("asyncapi version %v", doc["asyncapi"])
	}
	// The kinds as docs/events.md lists them: "#### `kind` (`Message`, field N)".
	md, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, m := range regexp.MustCompile("(?m)^#### `([a-z_]+)` \\(`([A-Za-z]+)`, field [0-9]+\\)").FindAllStringSubmatch(string(md), -1) {
		kinds = append(kinds, m[1]+" "+m[2])
	}
	if len(kinds) < 25 {
		t.Fatalf("found only %d kinds in docs/events.md", len(kinds))
	}
	get := func(v any, path ...string) any {
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}
	channel := get(doc, "channels", "parley.conv.v1.{tenant}.{conversation}.{kind}")
	enum, _ := get(channel, "parameters", "kind", "schema", "enum").([]any)
	var refs []string
	for _, r := range get(channel, "subscribe", "message", "oneOf").([]any) {
		refs = append(refs, get(r, "$ref").(string))
	}
	for _, km := range kinds {
		kind, msg, _ := strings.Cut(km, " ")
		if !slices.Contains(enum, any(kind)) {
			t.Errorf("kind %s is not in the subject's kind enum", kind)
		}
		if !slices.Contains(refs, "#/components/messages/"+kind) {
			t.Errorf("kind %s is not among the channel's messages", kind)
		}
		m := get(doc, "components", "messages", kind)
		if get(m, "title") != msg {
			t.Errorf("message %s: title %v, want %s", kind, get(m, "title"), msg)
		}
		if get(m, "payload", "properties", kind, "$ref") != "#/components/schemas/parley.event.v1."+msg {
			t.Errorf("message %s: payload %v", kind, get(m, "payload"))
		}
	}
	if len(enum) != len(kinds) {
		t.Errorf("the document has %d kinds, docs/events.md %d", len(enum), len(kinds))
	}
	// Every reference resolves.
	for _, r := range regexp.MustCompile(`\$ref: '#/([^']+)'`).FindAllStringSubmatch(string(raw), -1) {
		if get(doc, strings.Split(r[1], "/")...) == nil {
			t.Errorf("dangling $ref %s", r[1])
		}
	}
	for _, h := range []string{"Nats-Msg-Id", "Parley-Kind", "traceparent"} {
		if get(doc, "components", "schemas", "ConversationEventHeaders", "properties", h) == nil {
			t.Errorf("header %s is not described", h)
		}
	}
}
