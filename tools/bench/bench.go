// Package bench measures the whole suite on this machine and writes the
// results, each next to the ceiling or baseline measured in the same run,
// to BENCHMARKS.md. It starts everything itself: NATS, PostgreSQL and
// ClickHouse, and the five services as separate processes (so each one's
// peak memory can be read), generates traffic with tools/loadgen, and
// queries through the public gRPC APIs.
//
// Measurements, not assertions: targets are reported as met or missed.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/parley-dev/parley/tools/stack"
)

// Options configure a run.
type Options struct {
	// Root is the repository root (service binaries are built from it).
	Root string
	// Dir holds the run's data and logs.
	Dir string
	// Phase is how long each throughput phase runs (default 20s).
	Phase time.Duration
	// Sizes are the conversation counts for query latency (default 100k
	// and 1M).
	Sizes []int
	// Log receives progress.
	Log io.Writer
	// Only, when set, runs just these phases (see Phases); the report then
	// holds only their figures.
	Only []string
	// ProfileDir, when set, receives Go CPU profiles of every process
	// (each service and the stack runner, i.e. the embedded NATS server)
	// during the sustained phase and the rebuild, and heap profiles of every
	// service at the end of the sustained load and once it drained.
	ProfileDir string
}

// Phases are the bench's phases, in the order they run.
var Phases = []string{"ingest", "lag", "sustained", "ceiling", "queries", "baseline", "rebuild", "notification", "memory", "lazy"}

// runs reports whether the phase is selected.
func (o *Options) runs(phase string) bool {
	return len(o.Only) == 0 || slices.Contains(o.Only, phase)
}

// ParsePhases reads a comma-separated phase list (PARLEY_BENCH_ONLY);
// empty selects every phase.
func ParsePhases(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(Phases, f) {
			return nil, fmt.Errorf("unknown phase %q (phases: %s)", f, strings.Join(Phases, ", "))
		}
		out = append(out, f)
	}
	return out, nil
}

// Result is one measured figure.
type Result struct {
	Group, Name string
	Value       float64
	Unit        string
	// Reference is the ceiling or baseline this figure is compared with,
	// measured in the same run (empty when none applies).
	Reference      string
	ReferenceValue float64
	// Ratio is Value / ReferenceValue (or its inverse for latencies, so
	// that above 1 always means "better than the reference").
	Ratio float64
	// Target is the target, and whether it was met.
	Target string
	Met    *bool
	Note   string
}

// Report is a whole run.
type Report struct {
	Started  time.Time
	Duration time.Duration
	Machine  string
	Results  []Result
	Notes    []string
	// Kept is hand-written Markdown carried over from the previous
	// BENCHMARKS.md (see KeptSections), rendered after the notes.
	Kept string
}

func (r *Report) add(res Result) { r.Results = append(r.Results, res) }

func (o *Options) defaults() {
	if o.Phase <= 0 {
		o.Phase = 20 * time.Second
	}
	if len(o.Sizes) == 0 {
		o.Sizes = []int{100_000, 1_000_000}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Run performs every measurement.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	rep := &Report{Started: time.Now(), Machine: machine()}
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	bin := filepath.Join(o.Dir, "bin")
	logf("building the parley binary and loadgen into %s", bin)
	pkgs := map[string]string{"loadgen": "./tools/cmd/loadgen", stack.Binary: "./tools/cmd/parley"}
	for name, pkg := range pkgs {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, name), pkg)
		cmd.Dir = o.Root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("bench: build %s: %v\n%s", name, err, out)
		}
	}

	if o.runs("notification") {
		for k, v := range notificationEnv() {
			if os.Getenv(k) == "" {
				os.Setenv(k, v)
				defer os.Unsetenv(k)
			}
		}
	}
	// The production setting first: JetStream syncs before acknowledging.
	logf("starting the suite with sync_interval: always")
	synced, err := startSuite(ctx, o, bin, true)
	if err != nil {
		return nil, err
	}
	err = func() error {
		defer synced.Stop()
		prof, err := newProfiler(o.ProfileDir, synced, logf)
		if err != nil {
			return err
		}
		if o.runs("ingest") {
			if err := measureIngest(ctx, o, synced, rep, prof, "sync-always", logf); err != nil {
				return err
			}
		}
		if o.runs("lag") || o.runs("sustained") {
			if err := measureEndToEnd(ctx, o, synced, rep, prof, logf); err != nil {
				return err
			}
		}
		if o.runs("ceiling") {
			if err := measureClickHouseCeiling(ctx, synced, rep, logf); err != nil {
				return err
			}
		}
		if o.runs("queries") {
			if err := measureQueries(ctx, o, synced, rep, logf); err != nil {
				return err
			}
		}
		if o.runs("baseline") {
			if err := measurePostgresBaseline(ctx, o, synced, rep, logf); err != nil {
				return err
			}
		}
		if o.runs("rebuild") {
			if err := measureRebuild(ctx, o, synced, rep, prof, logf); err != nil {
				return err
			}
		}
		if o.runs("notification") {
			if err := measureNotification(ctx, o, synced, rep, prof, logf); err != nil {
				return err
			}
		}
		if o.runs("memory") {
			measureMemory(synced, rep)
		}
		return nil
	}()
	if err != nil {
		return nil, err
	}

	if o.runs("lazy") {
		logf("starting the suite with JetStream's default (lazy) sync")
		lazy, err := startSuite(ctx, o, bin, false)
		if err != nil {
			return nil, err
		}
		err = func() error {
			defer lazy.Stop()
			return measureIngest(ctx, o, lazy, rep, nil, "lazy", logf)
		}()
		if err != nil {
			return nil, err
		}
	}
	compareToPostgres(rep)
	rep.Notes = append(rep.Notes,
		"Query latencies are measured on a settled system: synthetic conversations are inserted straight into ClickHouse, then the bench waits until every consumer has caught up with the log and ClickHouse runs no merge (a dashboard reader's usual situation); `go test ./services/reporting -run XXX -bench QueriesAt1M` measures the same queries against a server holding nothing else.",
		"Lag and sustained throughput start from a drained pipeline; sustained throughput counts until every consumer (lifecycle, tagging, reporting) has applied every event, the derived ones included.",
		"The PostgreSQL baseline's ingest figure is one transaction per message (insert the message, upsert the conversation) from 16 writers; its dashboard is the same figures as GetDashboard computed with SQL over its tables.",
		"CPU per event: each process's user and system CPU time (/proc/<pid>/stat utime+stime, plus cutime+cstime of its exited children) over the sustained phase, from the start of the load until every consumer has applied everything, divided by the events projected into ClickHouse's events table in that time (acknowledged events plus the ones lifecycle and tagging derived). PostgreSQL is its postmaster's whole process tree (every backend and background worker); NATS is the stack runner process's own threads (utime+stime, not its children: the services, PostgreSQL, ClickHouse and loadgen are its child processes, counted under their own names), which run the embedded NATS server and otherwise only poll consumer state once a second (the load comes from a loadgen process of its own, reported separately and not summed). Idle CPU while the last events drain is included.",
		"The durable ceiling is raw JetStream atomic-batch publishing (ADR-50: full batches of 1000 messages, each with its own message id, from 4 publishers) to a scratch stream on the same server with sync_interval: always: one stream write and one sync per batch, the most any durable ingest can store. The per-message async publish rate is kept for comparison.",
		"Per-service CPU can be profiled on the admin ports (`/debug/pprof/profile`); `PARLEY_BENCH_PROFILE=dir` saves CPU profiles of every process (the runner's, i.e. NATS, included) during the ingest, sustained and rebuild phases and the services' heap profiles, and `PARLEY_BENCH_ONLY=sustained` runs one phase (docs/operations.md, \"Profiling a load test\").")
	rep.Duration = time.Since(rep.Started)
	return rep, nil
}

func startSuite(ctx context.Context, o Options, bin string, syncAlways bool) (*suite, error) {
	name := "lazy"
	if syncAlways {
		name = "sync"
	}
	dir := filepath.Join(o.Dir, "stack-"+name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	logs, err := os.Create(filepath.Join(o.Dir, "stack-"+name+".log"))
	if err != nil {
		return nil, err
	}
	st, err := stack.Start(ctx, stack.Options{Dir: dir, FreePorts: true, SyncAlways: syncAlways, BinDir: bin, DemoTenant: "bench", LogOutput: logs, LogLevel: "warn"})
	if err != nil {
		logs.Close()
		return nil, fmt.Errorf("bench: start suite: %w", err)
	}
	return &suite{Stack: st, logs: logs, loadgen: filepath.Join(bin, "loadgen")}, nil
}

type suite struct {
	*stack.Stack
	logs *os.File
	// loadgen is the loadgen binary, for phases whose client must run in
	// a process of its own (CPU per process).
	loadgen string
	// msgShare is the share of message_posted among generated events
	// (measured in the ingest phase; converts events/s into messages/s).
	msgShare float64
}

// Stop stops the suite.
func (s *suite) Stop() {
	s.Stack.Stop()
	_ = s.logs.Close()
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				if _, v, ok := strings.Cut(name, ":"); ok {
					cpu = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				mem = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s RAM", runtime.NumCPU(), cpu, mem)
}
