package bench_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/tools/bench"
)

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// A whole bench run at toy scale: every phase runs against the real suite
// (NATS, PostgreSQL, ClickHouse, the five services as processes) and yields
// its figures, and the report renders. Figures are not judged here.
func TestRunAtSmallScale(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the whole suite twice")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "parley-bench-*")
	if err != nil {
		t.Fatal(err)
	}
	// PostgreSQL runs as the postgres user, who must be able to enter it.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{Root: root, Dir: dir, Phase: 2 * time.Second, Sizes: []int{2000}, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"raw JetStream async publish":                                       false,
		"raw JetStream atomic-batch publish (ceiling)":                      false,
		"durable ingest ÷ atomic-batch ceiling (requests of 100)":           false,
		"ingest: CPU per event":                                             false,
		"lifecycle: CPU per event":                                          false,
		"tagging: CPU per event":                                            false,
		"reporting: CPU per event":                                          false,
		"NATS JetStream (stack runner process): CPU per event":              false,
		"postgres: CPU per event":                                           false,
		"clickhouse: CPU per event":                                         false,
		"all processes: CPU per event":                                      false,
		"loadgen (the client, not in the sum): CPU per event":               false,
		"ingest: events acknowledged":                                       false,
		"ingest, requests of 1000 events: events acknowledged":              false,
		"sustained: events acknowledged and projected":                      false,
		"raw ClickHouse batch insert (10,000 rows per insert)":              false,
		"GetDashboard, all time, p95":                                       false,
		"ListConversations, last 30 days + text search, p95":                false,
		"rebuild: events replayed into fresh tables":                        false,
		"reporting: peak resident memory (whole run)":                       false,
		"sustained messages/s, Parley ÷ plain design":                       false,
		"lag ack → visible in ListConversations, p99 (at 5,000 messages/s)": false,
	}
	for _, r := range rep.Results {
		if _, ok := want[r.Name]; ok {
			want[r.Name] = true
			if r.Value <= 0 {
				t.Errorf("%s (%s): %v %s", r.Name, r.Group, r.Value, r.Unit)
			}
		}
		if strings.Contains(r.Note, "errors") && !strings.Contains(r.Note, " 0 errors") {
			t.Errorf("%s: %s", r.Name, r.Note)
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("no figure %q", name)
		}
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md, "go test ./tools/bench"); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + md.String())
	for _, s := range []string{"## Ingest (sync-always)", "## End to end", "## Queries at 2k conversations", "## Memory", "## Ingest (lazy)", "## CPU per event (sustained phase)", "| Measurement | Value |", "## Targets", "| CPU per event (sustained phase): all processes: CPU per event |"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("report lacks %q", s)
		}
	}
}

// PARLEY_BENCH_ONLY=sustained with PARLEY_BENCH_PROFILE: only the
// sustained phase runs, and every process of the suite leaves a CPU
// profile of it (each service from its admin port, the stack runner with
// the embedded NATS server from runtime/pprof) and every service a heap
// profile, all readable by pprof.
func TestSustainedOnlyWithProfiles(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the whole suite")
	}
	root, dir := benchDirs(t)
	prof := filepath.Join(dir, "profiles")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{Root: root, Dir: dir, Phase: 2 * time.Second, Log: testLog{t}, Only: []string{"sustained"}, ProfileDir: prof})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Group != "End to end" && r.Group != "CPU per event (sustained phase)" {
			t.Errorf("figure of an unselected phase: %s: %s", r.Group, r.Name)
		}
	}
	if find(rep, "sustained: messages acknowledged and projected") == nil {
		t.Error("no sustained figure")
	}
	if find(rep, "lag ack → visible in ListConversations, p99 (at 5,000 messages/s)") != nil {
		t.Error("the lag phase ran although only sustained was selected")
	}
	var files []string
	for _, svc := range []string{"ingest", "lifecycle", "tagging", "reporting", "notification"} {
		files = append(files, "sustained-"+svc+".cpu.pprof", "sustained-loaded-"+svc+".heap.pprof", "sustained-drained-"+svc+".heap.pprof")
	}
	files = append(files, "sustained-nats-runner.cpu.pprof")
	for _, f := range files {
		path := filepath.Join(prof, f)
		out, err := exec.Command("go", "tool", "pprof", "-raw", path).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("Samples:")) {
			t.Errorf("%s: not a profile pprof reads (%v): %.300s", f, err, out)
		}
	}
}

func find(rep *bench.Report, name string) *bench.Result {
	for i := range rep.Results {
		if rep.Results[i].Name == name {
			return &rep.Results[i]
		}
	}
	return nil
}

// PARLEY_BENCH_ONLY=notification: only the notification phase runs and it
// yields event → webhook latency, fan-out deliveries/s and notification's
// peak memory, every webhook and delivery received.
func TestNotificationOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the whole suite")
	}
	root, dir := benchDirs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{Root: root, Dir: dir, Phase: 2 * time.Second, Log: testLog{t}, Only: []string{"notification"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Group != "Notification" {
			t.Errorf("figure of an unselected phase: %s: %s", r.Group, r.Name)
		}
	}
	for name, note := range map[string]string{
		"event → webhook latency, p50 (at 1,000 events/s)": "2000 events published",
		"event → webhook latency, p99 (at 1,000 events/s)": "2000 webhooks received",
		"fan-out of one event to 100 subscriptions":        "2000 deliveries received",
		"notification: peak resident memory (whole run)":   "",
	} {
		r := find(rep, name)
		if r == nil || r.Value <= 0 || !strings.Contains(r.Note, note) {
			t.Errorf("%s: %+v, want a value and a note with %q", name, r, note)
		}
	}
}

// benchDirs returns the repository root and a fresh run directory that
// the postgres user may enter (PostgreSQL runs as it), removed afterwards.
func benchDirs(t *testing.T) (root, dir string) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if dir, err = os.MkdirTemp("", "parley-bench-*"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return root, dir
}
