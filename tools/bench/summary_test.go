package bench

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// loadgen's summary, as tools/cmd/loadgen prints it, yields the counts.
func TestParseLoadgenSummary(t *testing.T) {
	out := "loadgen: generated traffic, mode batch, 16 senders, 1 tenants, 2.5s\n" +
		"  conversations  120 completed\n" +
		"  events         3021 sent, 3000 acknowledged (4 duplicates), 21 errors\n" +
		"  messages       1800, closes 90\n" +
		"  throughput     1200 events/s\n"
	st, err := parseLoadgenSummary(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Events != 3021 || st.Acked != 3000 || st.Duplicates != 4 || st.Errors != 21 || st.Messages != 1800 || st.Closes != 90 || st.Elapsed != 2500*time.Millisecond {
		t.Fatalf("%+v", st)
	}
	if _, err := parseLoadgenSummary("loadgen: interrupted\n"); err == nil {
		t.Fatal("no error for output without a summary")
	}
}

// The CPU of a process tree includes a child that already exited and was
// waited for, and a child still running.
func TestTreeCPUSecondsCountsChildren(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: burns a second of CPU")
	}
	before, err := TreeCPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// A shell that does a fixed amount of work, then exits; it is waited
	// for, and the kernel's rusage says how much CPU it used (the
	// independent figure the tree's total must include).
	done := exec.Command("sh", "-c", `i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done`)
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	doneCPU := (done.ProcessState.UserTime() + done.ProcessState.SystemTime()).Seconds()
	// One that spins and is still running when measured.
	live := exec.Command("sh", "-c", `while :; do :; done`)
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = live.Process.Kill(); _ = live.Wait() }()
	time.Sleep(600 * time.Millisecond)
	liveCPU, err := TreeCPUSeconds(live.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	after, err := TreeCPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if liveCPU <= 0 {
		t.Errorf("the running child used %.2f s of CPU, want some", liveCPU)
	}
	// /proc counts in clock ticks: allow two ticks of rounding per process.
	if got := after - before; got < doneCPU+liveCPU-0.04 {
		t.Errorf("the tree used %.2f s meanwhile, want at least the finished child's %.2f s (rusage) plus the running one's %.2f s", got, doneCPU, liveCPU)
	}
}

// The stack runner's figure (the embedded NATS server) is its own threads
// only: the services, PostgreSQL, ClickHouse and loadgen are its children
// and are reported under their own names, so counting its tree would count
// them twice.
func TestRunnerCPUExcludesItsChildren(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: burns a second of CPU")
	}
	procs := map[string]int{runnerProcess: os.Getpid()}
	before := sampleCPU(procs)
	child := exec.Command("sh", "-c", `while :; do :; done`)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the child has spun for 0.3 s of CPU (longer on a busy
	// machine), so the comparison below has something to tell apart.
	var childCPU float64
	for deadline := time.Now().Add(time.Minute); childCPU < 0.3; time.Sleep(100 * time.Millisecond) {
		var err error
		if childCPU, err = TreeCPUSeconds(child.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spinning child got only %.2f s of CPU in a minute", childCPU)
		}
	}
	after := sampleCPU(procs)
	_ = child.Process.Kill()
	_ = child.Wait()
	// The test process itself sleeps meanwhile: well under the child's time.
	if got := after[runnerProcess] - before[runnerProcess]; got > childCPU/2 {
		t.Errorf("the runner used %.2f s meanwhile, its spinning child %.2f s: the child was counted", got, childCPU)
	}
}
