package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/tools/stack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// TestProjectionsRebuild runs `parleyctl projections rebuild` against the
// whole local stack and checks the conversation reads the same afterwards.
func TestProjectionsRebuild(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := stack.Start(ctx, stack.Options{Dir: dir, FreePorts: true, DemoTenant: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+st.DemoKey)
	dial := func(addr string) *grpc.ClientConn {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	in := ingestv1.NewIngestServiceClient(dial(st.GRPCAddr("ingest")))
	for i, text := range []string{"hello", "where is my parcel?", "thanks"} {
		if _, err := in.PostMessage(authed, &ingestv1.PostMessageRequest{ConversationId: "rb-1", ClientEventId: text,
			Message: &eventv1.MessagePosted{Role: []eventv1.Role{eventv1.Role_ROLE_VISITOR, eventv1.Role_ROLE_BOT}[i%2], Text: text}}); err != nil {
			t.Fatal(err)
		}
	}
	rep := reportingv1.NewReportingServiceClient(dial(st.GRPCAddr("reporting")))
	read := func() *reportingv1.Conversation {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := rep.GetConversation(authed, &reportingv1.GetConversationRequest{ConversationId: "rb-1"})
			if err == nil && len(c.Messages) == 3 && c.Summary.GetMessageCount() == 3 {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("conversation not projected: %v %v", c, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	before := read()
	var out bytes.Buffer
	run := func(args ...string) error {
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"projections", "rebuild", "--addr", st.GRPCAddr("reporting")}, args...))
		return root.ExecuteContext(ctx)
	}
	// A rebuild covers every tenant: the demo tenant's key (every tenant
	// scope) is refused, from the flag or from PARLEY_OPERATOR_API_KEY, and
	// the tool says which key it needs.
	if err := run("--api-key", st.DemoKey); err == nil || !strings.Contains(err.Error(), "PermissionDenied") || !strings.Contains(err.Error(), "PARLEY_OPERATOR_API_KEY") {
		t.Fatalf("tenant key: %v", err)
	}
	t.Setenv("PARLEY_OPERATOR_API_KEY", st.DemoKey)
	if err := run(); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Fatalf("tenant key from the environment: %v", err)
	}
	t.Setenv("PARLEY_OPERATOR_API_KEY", "")
	// Without a key it says how to get one.
	t.Setenv("PARLEY_STACK_DIR", t.TempDir())
	if err := run("--api-key", ""); err == nil || !strings.Contains(err.Error(), "no API key") {
		t.Fatalf("no key: %v", err)
	}
	// The stack writes a platform key with the operator scope; the
	// command finds it there.
	if _, err := os.Stat(filepath.Join(dir, "operator-api-key")); err != nil {
		t.Fatalf("the stack wrote no operator key: %v", err)
	}
	t.Setenv("PARLEY_STACK_DIR", dir)
	out.Reset()
	if err := run(); err != nil {
		t.Fatalf("rebuild with the stack's operator key: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "done") || !strings.Contains(out.String(), "the new tables are live") {
		t.Fatalf("output:\n%s", out.String())
	}
	after := read()
	if after.Summary.StartedAt.AsTime() != before.Summary.StartedAt.AsTime() || after.Messages[1].Text != before.Messages[1].Text {
		t.Fatalf("conversation changed by the rebuild:\n%v\n%v", before, after)
	}
}
