package chaos

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The helpers the chaos run finds and kills processes with, on real
// processes: a child is found by command name, its data directory read from
// its command line, and a SIGKILL to its group ends it.
func TestChildProcesses(t *testing.T) {
	// "; :" keeps the shell from exec'ing sleep, so the child is the shell
	// with -D in its command line.
	cmd := exec.Command("sh", "-c", "sleep 60; :", "sh", "-D", "/data/dir")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { killGroup(cmd.Process.Pid); <-exited })

	pid, err := childPid(os.Getpid(), "sh")
	if err != nil {
		t.Fatal(err)
	}
	if pid != cmd.Process.Pid {
		t.Fatalf("childPid = %d, want %d", pid, cmd.Process.Pid)
	}
	if _, err := childPid(os.Getpid(), "no-such-process"); err == nil {
		t.Error("childPid found a process that does not exist")
	}
	dir, err := postgresDataDir(pid)
	if err != nil || dir != "/data/dir" {
		t.Errorf("postgresDataDir = %q, %v; want /data/dir", dir, err)
	}
	// The shell's sleep is in its process group: a SIGKILL to the group
	// ends both.
	var sleeper int
	for deadline := time.Now().Add(5 * time.Second); sleeper == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		sleeper, _ = childPid(pid, "sleep")
	}
	if sleeper == 0 {
		t.Fatal("the shell's sleep did not start")
	}
	killGroup(pid)
	<-exited
	ctx := context.Background()
	if err := waitGone(ctx, pid, 5*time.Second); err != nil {
		t.Error(err)
	}
	if err := waitGone(ctx, sleeper, 5*time.Second); err != nil {
		t.Errorf("the group's other process: %v", err)
	}
}

// Every port of a chaos stack is distinct, so a restarted stack binds the
// same ones again.
func TestFreePortsDistinct(t *testing.T) {
	p, err := freePorts()
	if err != nil {
		t.Fatal(err)
	}
	all := []int{p.NATS, p.Postgres, p.ClickHouseTCP, p.ClickHouseHTTP, p.IngestHTTP, p.ReportingHTTP}
	all = append(all, p.GRPC[:]...)
	all = append(all, p.Admin[:]...)
	seen := map[int]bool{}
	for _, n := range all {
		if n == 0 || seen[n] {
			t.Fatalf("port %d zero or repeated: %+v", n, p)
		}
		seen[n] = true
	}
}
