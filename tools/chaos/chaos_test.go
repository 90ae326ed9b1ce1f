package chaos_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/tools/chaos"
)

// The test binary is also the chaos run's stack runner.
func TestMain(m *testing.M) {
	chaos.MaybeRunner()
	os.Exit(m.Run())
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// A chaos run at small scale: a few hundred conversations while each
// service is killed once, ClickHouse and PostgreSQL are down for a few
// seconds and the whole stack crashes once; verify must find nothing.
// It runs in make test; make chaos is the same at large scale.
func TestChaosSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the whole stack and breaks it")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "parley-chaos-*")
	if err != nil {
		t.Fatal(err)
	}
	// PostgreSQL runs as the postgres user, who must be able to enter it
	// (else its data would go to /var/lib/parley).
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	var out strings.Builder
	rep, err := chaos.Run(ctx, chaos.Options{Root: root, Dir: dir, Conversations: 300, Rate: 80, Concurrency: 4,
		Kills: 1, KillEvery: 2 * time.Second, ClickHouseOutage: 4 * time.Second, PostgresOutage: 4 * time.Second, StackCrashes: 1,
		Settle: 3 * time.Minute, Stable: 30 * time.Second, Log: testLog{t}, Out: &out})
	t.Log("verify:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Failures {
		t.Errorf("chaos step failed: %s", f)
	}
	if rep.Verify == nil || !rep.Verify.OK() {
		t.Errorf("verify found problems (report above)")
	}
	if rep.Load.Acked == 0 {
		t.Errorf("loadgen had nothing acknowledged: %s", rep.Load)
	}
	wantSteps := []string{"killed ingest", "killed lifecycle", "killed tagging", "killed reporting", "killed notification",
		"ClickHouse stopped", "ClickHouse started again", "PostgreSQL stopped", "PostgreSQL started again", "crashed the whole stack"}
	all := strings.Join(rep.Timeline, "\n")
	for _, s := range wantSteps {
		if !strings.Contains(all, s) {
			t.Errorf("the timeline lacks %q:\n%s", s, all)
		}
	}
}
