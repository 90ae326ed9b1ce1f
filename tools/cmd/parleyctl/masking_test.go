package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/tools/stack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// TestMaskingCommands runs `parleyctl masking ...` against the local stack:
// a dry run shows the change and stores nothing, put/list/delete manage
// rules, a stored rule masks what ingest stores next, bad values are
// refused naming the field.
func TestMaskingCommands(t *testing.T) {
	ctx := context.Background()
	st, err := stack.Start(ctx, stack.Options{Dir: t.TempDir(), FreePorts: true, DemoTenant: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(append([]string{"masking"}, args...), "--addr", st.GRPCAddr("ingest"), "--api-key", st.DemoKey))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	conn, err := grpc.NewClient(st.GRPCAddr("ingest"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+st.DemoKey)
	post := func(text string) {
		if _, err := ingestv1.NewIngestServiceClient(conn).PostMessage(authed, &ingestv1.PostMessageRequest{ConversationId: "pc1",
			Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text}}); err != nil {
			t.Fatal(err)
		}
	}
	post("reach me at a@b.example")
	if out, err := run("dry-run", "--detector", "email"); err != nil || !strings.Contains(out, "examined 1 messages, 1 would change") || !strings.Contains(out, `"reach me at [email]"`) {
		t.Fatalf("dry-run: %v\n%s", err, out)
	}
	if out, err := run("list"); err != nil || strings.Contains(out, "email") {
		t.Fatalf("list after dry run: %v\n%s", err, out)
	}
	if out, err := run("put", "emails", "--detector", "email", "--action", "hash"); err != nil || !strings.Contains(out, "emails") {
		t.Fatalf("put: %v\n%s", err, out)
	}
	if out, err := run("list"); err != nil || !strings.Contains(out, "emails  email") || !strings.Contains(out, "hash") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	post("again a@b.example")
	if out, err := run("dry-run", "--detector", "custom", "--pattern", `\[email:[0-9a-f]{16}\]`); err != nil || !strings.Contains(out, "would change") || !strings.Contains(out, `"again [dry-run]"`) {
		t.Fatalf("stored message not hashed: %v\n%s", err, out)
	}
	if out, err := run("put", "bad", "--detector", "custom", "--pattern", "(a"); err == nil || !strings.Contains(out, "InvalidArgument") || !strings.Contains(out, "rule.pattern") {
		t.Fatalf("bad pattern: %v\n%s", err, out)
	}
	if out, err := run("delete", "emails"); err != nil || !strings.Contains(out, "deleted emails") {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if out, err := run("delete", "emails"); err == nil || !strings.Contains(out, "NotFound") {
		t.Fatalf("delete again: %v\n%s", err, out)
	}
}
