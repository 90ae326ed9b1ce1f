package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/parley-dev/parley/libs/eventbus"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/tools/loadgen"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// appendOnly is an ingest that answers Append for key "k1" (tenant t1) and
// "k2" (tenant t2).
type appendOnly struct {
	ingestv1.UnimplementedIngestServiceServer
	mu  sync.Mutex
	seq uint64
}

func (a *appendOnly) Append(ctx context.Context, req *ingestv1.AppendRequest) (*ingestv1.AppendResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	tenant := map[string]string{"Bearer k1": "t1", "Bearer k2": "t2"}[strings.Join(md.Get("authorization"), "")]
	if tenant == "" {
		return nil, status.Error(codes.Unauthenticated, "invalid API key")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := &ingestv1.AppendResponse{}
	for _, e := range req.Events {
		a.seq++
		out.Results = append(out.Results, &ingestv1.EventResult{EventId: eventbus.ClientEventID(tenant, e.ConversationId, e.ClientEventId), StreamSequence: a.seq})
	}
	return out, nil
}

func serve(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	ingestv1.RegisterIngestServiceServer(s, &appendOnly{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func execute(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestLoadgenCommand(t *testing.T) {
	t.Setenv("PARLEY_API_KEY", "")
	acks := filepath.Join(t.TempDir(), "acks.jsonl")
	out, _, err := execute(t, "--ingest-addr", serve(t), "--api-key", "k1", "--api-key-tenant", "t1", "--tenant", "t2=k2",
		"--conversations", "40", "--concurrency", "3", "--batch-size", "30", "--ack-log", acks, "--run-id", "cli")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"generated traffic, mode batch, 3 senders, 2 tenants", "conversations  40 completed", "0 errors", "parleyctl verify --acks " + acks} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	f, err := os.Open(acks)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	list, err := loadgen.ReadAcks(f)
	if err != nil {
		t.Fatal(err)
	}
	tenants := map[string]bool{}
	for _, a := range list {
		tenants[a.Tenant] = true
		if !strings.HasPrefix(a.Conversation, "cli-") {
			t.Fatalf("conversation %q", a.Conversation)
		}
	}
	if len(list) == 0 || !tenants["t1"] || !tenants["t2"] {
		t.Fatalf("%d acks for tenants %v", len(list), tenants)
	}
}

func TestLoadgenCommandErrors(t *testing.T) {
	t.Setenv("PARLEY_API_KEY", "")
	t.Setenv("PARLEY_STACK_DIR", t.TempDir()) // no demo key there
	addr := serve(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ingest-addr", addr}, "no API key"},
		{[]string{"--ingest-addr", addr, "--tenant", "t1"}, "want NAME=KEY"},
		{[]string{"--ingest-addr", addr, "--tenants", "3"}, "--tenants needs --postgres-url"},
		{[]string{"--ingest-addr", addr, "--api-key", "nope", "--conversations", "2"}, "refused the key"},
		{[]string{"--ingest-addr", addr, "--api-key", "k1", "--mode", "bulk"}, "mode"},
		{[]string{"--ingest-addr", addr, "--api-key", "k1", "--start", "yesterday"}, "--start"},
	} {
		_, _, err := execute(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error about %q", c.args, err, c.want)
		}
	}
}
