package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parley-dev/parley/tools/stack"
)

// RunnerEnv, when set in a process's environment, makes MaybeRunner run the
// stack runner: the JSON of a runnerSpec. The chaos run starts the stack in
// a process of its own (this program again, with RunnerEnv) so that it can
// kill -9 the whole stack, the runner's embedded NATS server included.
const RunnerEnv = "PARLEY_CHAOS_RUNNER"

// runnerSpec is what a runner process starts.
type runnerSpec struct {
	Dir        string
	BinDir     string
	Ports      stack.Ports
	SyncAlways bool
	Tenant     string
	Replicas   int
}

// runnerState is what a runner writes once its stack is ready.
type runnerState struct {
	NATSURL, PostgresURL, ClickHouseAddr, DemoKey string
	Pid                                           int
	// Replicas are the service replicas with their ports.
	Replicas []stack.Replica
}

func stateFile(dir string) string { return filepath.Join(dir, "chaos-runner.json") }

// MaybeRunner runs the stack runner and exits when RunnerEnv is set, and
// returns at once otherwise. Programs that run chaos (its command, its
// test binary) call it first thing.
func MaybeRunner() {
	spec := os.Getenv(RunnerEnv)
	if spec == "" {
		return
	}
	if err := runRunner(spec); err != nil {
		fmt.Fprintln(os.Stderr, "chaos runner:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runRunner starts the stack on the spec's fixed ports and data dir,
// writes its addresses to the state file, and stops it on SIGTERM.
func runRunner(specJSON string) error {
	var spec runnerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("%s: %w", RunnerEnv, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logs, err := os.OpenFile(filepath.Join(spec.Dir, "services.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logs.Close()
	st, err := stack.Start(ctx, stack.Options{Dir: spec.Dir, Ports: spec.Ports, BinDir: spec.BinDir, SyncAlways: spec.SyncAlways,
		DemoTenant: spec.Tenant, LogOutput: logs, LogLevel: "warn", Replicas: spec.Replicas})
	if err != nil {
		return err
	}
	defer st.Stop()
	b, _ := json.Marshal(runnerState{NATSURL: st.NATSURL, PostgresURL: st.PostgresURL, ClickHouseAddr: st.ClickHouseAddr, DemoKey: st.DemoKey, Pid: os.Getpid(), Replicas: st.Replicas()})
	tmp := stateFile(spec.Dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, stateFile(spec.Dir)); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// children returns the processes whose parent is ppid, by command name
// (/proc/<pid>/comm, at most 15 characters).
func children(ppid int) map[string][]int {
	out := map[string][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue // zombies are gone already
		}
		if p, _ := strconv.Atoi(f[1]); p == ppid {
			name := s[open+1 : end]
			out[name] = append(out[name], pid)
		}
	}
	return out
}

// childPid returns the one child of ppid whose command name starts with
// prefix.
func childPid(ppid int, prefix string) (int, error) {
	for name, pids := range children(ppid) {
		if strings.HasPrefix(name, prefix) && len(pids) > 0 {
			return pids[0], nil
		}
	}
	return 0, fmt.Errorf("chaos: no process %s under pid %d", prefix, ppid)
}

// replicaPid returns the child of ppid that runs the replica: the parley
// binary started with -target=<service> (the local stack's process mode)
// whose environment holds the replica's admin address.
func replicaPid(ppid int, rep stack.Replica) (int, error) {
	adminEnv := fmt.Sprintf("PARLEY_%s_ADMIN_ADDR=127.0.0.1:%d", strings.ToUpper(rep.Service), rep.Admin)
	for _, pid := range children(ppid)[stack.Binary] {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !slices.Contains(strings.Split(string(b), "\x00"), "-target="+rep.Service) {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		// The stack appends its settings after the caller's environment:
		// the last value wins.
		var admin string
		for _, kv := range strings.Split(string(env), "\x00") {
			if strings.HasPrefix(kv, adminEnv[:strings.IndexByte(adminEnv, '=')+1]) {
				admin = kv
			}
		}
		if admin == adminEnv {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("chaos: no %s -target=%s for %s under pid %d", stack.Binary, rep.Service, rep.Name(), ppid)
}

// alive tells whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// waitGone waits until pid has exited.
func waitGone(ctx context.Context, pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("chaos: process %d still running after %s", pid, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// killGroup sends SIGKILL to pid's process group (a service, PostgreSQL and
// ClickHouse each lead their own) and to pid itself.
func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

var errNoState = errors.New("chaos: the stack runner wrote no state")
