package stack

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"google.golang.org/grpc/metadata"
)

// TestProcessMode runs every service as its own binary, configured only
// through the environment, and reads their peak memory.
func TestProcessMode(t *testing.T) {
	bin := t.TempDir()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range Services {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, s), "./services/"+s+"/cmd/"+s)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", s, err, out)
		}
	}
	ctx := context.Background()
	st, err := Start(ctx, Options{Dir: t.TempDir(), FreePorts: true, DemoTenant: "demo", BinDir: bin, LogOutput: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	in := ingestv1.NewIngestServiceClient(dial(t, st.GRPCAddr("ingest")))
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+st.DemoKey)
	if _, err := in.PostMessage(authed, &ingestv1.PostMessageRequest{ConversationId: "p-1", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hi"}}); err != nil {
		t.Fatal(err)
	}
	rss := st.PeakRSS()
	for _, s := range Services {
		if rss[s] < 1<<20 {
			t.Fatalf("peak RSS of %s: %d", s, rss[s])
		}
	}
	st.Stop()
	select {
	case err := <-st.Errors():
		t.Fatalf("a service failed: %v", err)
	default:
	}
}
