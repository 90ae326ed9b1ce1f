package stack

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"google.golang.org/grpc/metadata"
)

// TestProcessMode runs every service as its own process of the one parley
// binary (-target=<service>), configured only through the environment, reads their peak memory, and restarts services
// killed with SIGKILL.
func TestProcessMode(t *testing.T) {
	bin := buildParley(t)
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

	// A crashed service is restarted, as Kubernetes restarts a pod: kill -9
	// ingest and lifecycle, and both come back on their ports.
	before := st.PIDs()
	for _, name := range []string{"ingest", "lifecycle"} {
		if err := syscall.Kill(before[name], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, name := range []string{"ingest", "lifecycle"} {
		for !restartedAndReady(st, name, before[name]) {
			if time.Now().After(deadline) {
				t.Fatalf("%s was not restarted and ready within 60s (pids before %v, now %v, restarts %v)", name, before, st.PIDs(), st.Restarts())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if r := st.Restarts(); r["ingest"] != 1 || r["lifecycle"] != 1 || r["tagging"] != 0 || r["reporting"] != 0 {
		t.Fatalf("restarts = %v, want ingest and lifecycle once, no other", r)
	}
	if st.PIDs()["tagging"] != before["tagging"] {
		t.Fatal("tagging was restarted though it did not crash")
	}
	in = ingestv1.NewIngestServiceClient(dial(t, st.GRPCAddr("ingest")))
	if _, err := in.PostMessage(authed, &ingestv1.PostMessageRequest{ConversationId: "p-2", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "after the crash"}}); err != nil {
		t.Fatalf("post after the restart: %v", err)
	}
	st.Stop()
	select {
	case err := <-st.Errors():
		t.Fatalf("a service failed: %v", err)
	default:
	}
}

// buildParley builds the parley binary into a temp dir and returns the dir.
func buildParley(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(bin, Binary), "./tools/cmd/parley")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build parley: %v\n%s", err, out)
	}
	return bin
}

// restartedAndReady reports whether service runs as a new process (not
// oldPID) that answers ready on its admin port.
func restartedAndReady(st *Stack, service string, oldPID int) bool {
	pid := st.PIDs()[service]
	if pid == 0 || pid == oldPID {
		return false
	}
	resp, err := http.Get("http://" + st.AdminAddr(service) + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
