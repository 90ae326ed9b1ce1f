// Package chaos checks that Parley loses and duplicates nothing while its
// parts fail: against the whole stack in process mode (each service its own
// process, restarted with backoff when it dies) it sends loadgen traffic
// with an ack log and meanwhile kills every service with SIGKILL several
// times, takes ClickHouse and then PostgreSQL down for a while, and crashes
// the whole stack (every process, the runner's embedded NATS server
// included) and starts it again on the same data. Then tools/verify checks
// every acknowledged event and every projection, conversation by
// conversation, and the DLQ. `make chaos` runs it at the documented large
// scale; TestChaosSmall at a small one.
package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/tools/loadgen"
	"github.com/parley-dev/parley/tools/stack"
	"github.com/parley-dev/parley/tools/verify"
)

// Options configure a chaos run. Zero durations and counts take the
// defaults of `make chaos` (the documented large scale).
type Options struct {
	// Root is the repository root (the service binaries are built from it
	// unless BinDir is set).
	Root string
	// Dir holds the stack's data and logs, the binaries and the ack log.
	Dir string
	// BinDir holds a prebuilt parley binary (default: built into Dir/bin).
	BinDir string
	// Self is the program started as the stack runner with RunnerEnv set
	// (default: this executable; it must call MaybeRunner first thing).
	Self string
	// Conversations loadgen sends (default 15,000) at Rate events per
	// second (default 600) from Concurrency senders (default 8).
	Conversations int
	Rate          float64
	Concurrency   int
	// Kills is how often each service is killed with SIGKILL (default 3);
	// KillEvery is the pause after each kill (default 10s).
	Kills     int
	KillEvery time.Duration
	// ClickHouseOutage and PostgresOutage are how long each is down
	// (default 120s and 60s).
	ClickHouseOutage, PostgresOutage time.Duration
	// StackCrashes is how often the whole stack is killed and started
	// again on the same data (default 1).
	StackCrashes int
	// Settle and Stable bound verify's wait for the projections (default
	// 10 minutes and 60s).
	Settle, Stable time.Duration
	// Replicas is how many replicas of every service run (default 1). With
	// more than one, each kill takes down one replica (the next one each
	// round) and its partitions move to the survivors.
	Replicas int
	// LazySync runs JetStream with its default (lazy) flush instead of
	// syncing before every acknowledgement (the production setting).
	LazySync bool
	// Log receives the timeline; Out verify's report.
	Log, Out io.Writer
}

func (o *Options) defaults() error {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	seti := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	seti(&o.Conversations, 15_000)
	seti(&o.Concurrency, 8)
	seti(&o.Kills, 3)
	seti(&o.StackCrashes, 1)
	seti(&o.Replicas, 1)
	if o.Rate <= 0 {
		o.Rate = 600
	}
	set(&o.KillEvery, 10*time.Second)
	set(&o.ClickHouseOutage, 120*time.Second)
	set(&o.PostgresOutage, 60*time.Second)
	set(&o.Settle, 10*time.Minute)
	set(&o.Stable, 60*time.Second)
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		o.Self = self
	}
	var err error
	o.Dir, err = filepath.Abs(o.Dir)
	return err
}

// Report is the outcome of a chaos run.
type Report struct {
	// Timeline is what was done when.
	Timeline []string
	// Failures are steps that did not go as they must (a service that did
	// not come back, a store that did not start again).
	Failures []string
	// Load is loadgen's count; calls that failed for good during outages
	// are expected and not failures (verify checks what was acknowledged).
	Load loadgen.Stats
	// Verify is tools/verify's report (nil when it could not run).
	Verify *verify.Report
}

// OK tells whether every step went as it must and verify found nothing.
func (r *Report) OK() bool {
	return len(r.Failures) == 0 && r.Verify != nil && r.Verify.OK()
}

// run is one chaos run's state.
type run struct {
	o     Options
	spec  runnerSpec
	rep   *Report
	start time.Time
	// runner is the stack runner process now, closed runnerExited once it
	// has exited; state are its addresses.
	runner       *os.Process
	runnerExited chan struct{}
	state        runnerState
	// owned are ClickHouse and PostgreSQL servers this process started
	// again after an outage (the runner's died with the outage).
	owned []*localinfra.Process
	// chPid and pgPid are the servers' current processes.
	chPid, pgPid int
	infraLog     *os.File
}

// Run performs a chaos run and prints verify's report to Out. An error
// means the run could not be carried out; problems found are in the
// report (Report.OK).
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	r := &run{o: o, rep: &Report{}, start: time.Now()}
	if err := os.MkdirAll(filepath.Join(o.Dir, "stack"), 0o755); err != nil {
		return nil, err
	}
	// PostgreSQL runs as the postgres user, who must be able to enter it.
	for _, d := range []string{o.Dir, filepath.Join(o.Dir, "stack")} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	var err error
	if r.infraLog, err = os.OpenFile(filepath.Join(o.Dir, "infra-restarts.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
		return nil, err
	}
	defer r.infraLog.Close()
	if o.BinDir == "" {
		o.BinDir = filepath.Join(o.Dir, "bin")
		r.logf("building the parley binary into %s", o.BinDir)
		if err := buildServices(ctx, o.Root, o.BinDir); err != nil {
			return nil, err
		}
	}
	ports, err := freePorts()
	if err != nil {
		return nil, err
	}
	r.spec = runnerSpec{Dir: filepath.Join(o.Dir, "stack"), BinDir: o.BinDir, Ports: ports, SyncAlways: !o.LazySync, Tenant: "chaos", Replicas: o.Replicas}
	if err := r.startRunner(ctx); err != nil {
		return nil, err
	}
	defer r.stopAll()

	acks, err := os.Create(filepath.Join(o.Dir, "acks.jsonl"))
	if err != nil {
		return nil, err
	}
	defer acks.Close()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var (
		wg      sync.WaitGroup
		loadErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.rep.Load, loadErr = loadgen.Run(loadCtx, loadgen.Config{
			IngestAddr: fmt.Sprintf("127.0.0.1:%d", ports.GRPC[0]), Keys: map[string]string{r.spec.Tenant: r.state.DemoKey},
			Conversations: o.Conversations, Rate: o.Rate, Concurrency: o.Concurrency, AckLog: acks, Seed: 13,
		})
	}()

	r.chaos(ctx)
	r.logf("chaos done; waiting for loadgen to send the rest")
	wg.Wait()
	if loadErr != nil && ctx.Err() == nil {
		r.logf("loadgen: %v", loadErr)
	}
	r.logf("loadgen: %s", r.rep.Load)
	if ctx.Err() != nil {
		return r.rep, ctx.Err()
	}
	if err := acks.Sync(); err != nil {
		return r.rep, err
	}
	list, err := readAcks(acks.Name())
	if err != nil {
		return r.rep, err
	}
	r.logf("verify: %d acknowledgements", len(list))
	vr, err := verify.Run(ctx, verify.Config{Acks: list, NATSURL: r.state.NATSURL, PostgresURL: r.state.PostgresURL,
		ClickHouse: config.ClickHouse{Addr: r.state.ClickHouseAddr, Database: "parley", User: "default"}, Settle: o.Settle, Stable: o.Stable})
	if err != nil {
		return r.rep, fmt.Errorf("chaos: verify: %w", err)
	}
	r.rep.Verify = vr
	vr.Write(o.Out)
	return r.rep, nil
}

// chaos kills every service Kills times, takes ClickHouse and PostgreSQL
// down, and crashes the whole stack, one after the other.
func (r *run) chaos(ctx context.Context) {
	for round := 1; round <= r.o.Kills && ctx.Err() == nil; round++ {
		for _, name := range stack.Services {
			if ctx.Err() != nil {
				return
			}
			if err := r.waitServiceReady(ctx, name, 2*time.Minute); err != nil {
				r.fail("%s did not come back: %v", name, err)
				continue
			}
			victim, ok := r.replica(name, (round-1)%r.o.Replicas)
			if !ok {
				r.fail("no replica %d of %s", (round-1)%r.o.Replicas, name)
				continue
			}
			pid, err := replicaPid(r.state.Pid, victim)
			if err != nil {
				r.fail("%v", err)
				continue
			}
			killGroup(pid)
			r.logf("killed %s (pid %d) with SIGKILL, round %d of %d", victim.Name(), pid, round, r.o.Kills)
			sleep(ctx, r.o.KillEvery)
		}
	}
	for _, name := range stack.Services {
		if err := r.waitServiceReady(ctx, name, 2*time.Minute); err != nil {
			r.fail("%s did not come back after its last kill: %v", name, err)
		}
	}
	if ctx.Err() == nil {
		r.clickHouseOutage(ctx)
	}
	if ctx.Err() == nil {
		r.postgresOutage(ctx)
	}
	for n := 1; n <= r.o.StackCrashes && ctx.Err() == nil; n++ {
		r.crashStack(ctx, n)
	}
}

// clickHouseOutage stops ClickHouse (SIGTERM), keeps it down, and starts
// it again on the same data and ports.
func (r *run) clickHouseOutage(ctx context.Context) {
	if err := stopGracefully(ctx, r.chPid, syscall.SIGTERM); err != nil {
		r.fail("stop ClickHouse: %v", err)
		return
	}
	r.logf("ClickHouse stopped; down for %s", r.o.ClickHouseOutage)
	sleep(ctx, r.o.ClickHouseOutage)
	ch, err := localinfra.StartClickHouse(ctx, localinfra.ClickHouseOptions{Dir: filepath.Join(r.spec.Dir, "clickhouse"),
		TCPPort: r.spec.Ports.ClickHouseTCP, HTTPPort: r.spec.Ports.ClickHouseHTTP, Output: r.infraLog})
	if err != nil {
		r.fail("start ClickHouse again: %v", err)
		return
	}
	r.owned, r.chPid = append(r.owned, ch.Process), ch.Pid()
	r.logf("ClickHouse started again (pid %d)", ch.Pid())
}

// postgresOutage stops PostgreSQL (fast shutdown), keeps it down, and
// starts it again on the same data directory and port.
func (r *run) postgresOutage(ctx context.Context) {
	dataDir, err := postgresDataDir(r.pgPid)
	if err != nil {
		r.fail("PostgreSQL: %v", err)
		return
	}
	if err := stopGracefully(ctx, r.pgPid, syscall.SIGINT); err != nil {
		r.fail("stop PostgreSQL: %v", err)
		return
	}
	r.logf("PostgreSQL stopped; down for %s", r.o.PostgresOutage)
	sleep(ctx, r.o.PostgresOutage)
	pg, err := localinfra.StartPostgres(ctx, localinfra.PostgresOptions{Dir: dataDir, Port: r.spec.Ports.Postgres,
		Database: "parley", User: "parley", Password: "parley", Durable: true, Output: r.infraLog})
	if err != nil {
		r.fail("start PostgreSQL again: %v", err)
		return
	}
	r.owned, r.pgPid = append(r.owned, pg.Process), pg.Pid()
	r.logf("PostgreSQL started again (pid %d)", pg.Pid())
}

// crashStack kills every process of the stack with SIGKILL at once — the
// services, PostgreSQL, ClickHouse and the runner with its embedded NATS
// server — and starts the stack again on the same data.
func (r *run) crashStack(ctx context.Context, n int) {
	var pids []int
	for _, rep := range r.state.Replicas {
		if pid, err := replicaPid(r.state.Pid, rep); err == nil {
			pids = append(pids, pid)
		}
	}
	pids = append(pids, r.pgPid, r.chPid, r.state.Pid)
	for _, pid := range pids {
		killGroup(pid)
	}
	for _, pid := range pids {
		if err := waitGone(ctx, pid, time.Minute); err != nil {
			r.fail("crash the stack: %v", err)
			return
		}
	}
	<-r.runnerExited
	r.owned = nil
	r.logf("crashed the whole stack with SIGKILL (crash %d of %d: services, PostgreSQL, ClickHouse, the runner with NATS)", n, r.o.StackCrashes)
	if err := r.startRunner(ctx); err != nil {
		r.fail("start the stack again after the crash: %v", err)
		return
	}
}

// startRunner starts the stack runner and waits until it wrote its state.
func (r *run) startRunner(ctx context.Context) error {
	state := stateFile(r.spec.Dir)
	if err := os.Remove(state); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	spec, _ := json.Marshal(r.spec)
	logs, err := os.OpenFile(filepath.Join(r.o.Dir, "runner.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logs.Close()
	cmd := exec.Command(r.o.Self)
	cmd.Env = append(os.Environ(), RunnerEnv+"="+string(spec))
	cmd.Stdout, cmd.Stderr = logs, logs
	// Its own process group (a crash kills it as a whole); it stops with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("chaos: start the stack runner: %w", err)
	}
	exited := make(chan struct{})
	go func() { _, _ = cmd.Process.Wait(); close(exited) }()
	began := time.Now()
	for {
		b, err := os.ReadFile(state)
		if err == nil && json.Unmarshal(b, &r.state) == nil {
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("chaos: the stack runner exited during startup (see %s)", logs.Name())
		case <-ctx.Done():
			killGroup(cmd.Process.Pid)
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(began) > 5*time.Minute {
			killGroup(cmd.Process.Pid)
			return fmt.Errorf("%w after 5 minutes (see %s)", errNoState, logs.Name())
		}
	}
	r.runner, r.runnerExited = cmd.Process, exited
	if r.chPid, err = childPid(r.state.Pid, "clickhouse"); err != nil {
		return err
	}
	if r.pgPid, err = childPid(r.state.Pid, "postgres"); err != nil {
		return err
	}
	r.logf("stack up in %s (runner pid %d)", time.Since(began).Round(100*time.Millisecond), r.state.Pid)
	return nil
}

// stopAll stops the stack runner (services drain, then its stores and
// NATS), then the stores this process started again.
func (r *run) stopAll() {
	if r.runner != nil {
		_ = r.runner.Signal(syscall.SIGTERM)
		select {
		case <-r.runnerExited:
		case <-time.After(2 * time.Minute):
			for _, pids := range children(r.runner.Pid) {
				for _, pid := range pids {
					killGroup(pid)
				}
			}
			killGroup(r.runner.Pid)
			<-r.runnerExited
		}
	}
	for _, p := range r.owned {
		_ = p.Stop(30 * time.Second)
	}
}

func (r *run) logf(format string, args ...any) {
	line := fmt.Sprintf("%7.1fs  ", time.Since(r.start).Seconds()) + fmt.Sprintf(format, args...)
	r.rep.Timeline = append(r.rep.Timeline, line)
	fmt.Fprintln(r.o.Log, line)
}

func (r *run) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.rep.Failures = append(r.rep.Failures, msg)
	r.logf("FAILURE: %s", msg)
}

// replica returns replica index of service.
func (r *run) replica(service string, index int) (stack.Replica, bool) {
	for _, rep := range r.state.Replicas {
		if rep.Service == service && rep.Index == index {
			return rep, true
		}
	}
	return stack.Replica{}, false
}

// waitServiceReady waits until every replica of service answers /readyz.
func (r *run) waitServiceReady(ctx context.Context, service string, limit time.Duration) error {
	for _, rep := range r.state.Replicas {
		if rep.Service != service {
			continue
		}
		if err := r.waitReady(ctx, rep.Admin, limit); err != nil {
			return fmt.Errorf("%s: %w", rep.Name(), err)
		}
	}
	return nil
}

// waitReady waits until the admin port answers /readyz.
func (r *run) waitReady(ctx context.Context, adminPort int, limit time.Duration) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort)
	deadline := time.Now().Add(limit)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not ready after %s: %v", limit, err)
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// stopGracefully sends sig to pid and waits for it to exit (SIGKILL to its
// group after a minute).
func stopGracefully(ctx context.Context, pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return errors.New("not running")
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return err
	}
	if err := waitGone(ctx, pid, time.Minute); err != nil {
		killGroup(pid)
		return waitGone(ctx, pid, 10*time.Second)
	}
	return nil
}

// postgresDataDir reads the data directory (-D) of a running postmaster.
func postgresDataDir(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "", err
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	for i, a := range args {
		if a == "-D" && i+1 < len(args) {
			return args[i+1], nil
		}
	}
	return "", fmt.Errorf("no -D in the postmaster's command line %q", args)
}

// buildServices builds the parley binary, which runs each service
// (-target=<service>), into bin.
func buildServices(ctx context.Context, root, bin string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, stack.Binary), "./tools/cmd/parley")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chaos: build parley: %v\n%s", err, out)
	}
	return nil
}

// freePorts picks every port of the stack once, so that a restarted stack
// listens where clients already connect.
func freePorts() (stack.Ports, error) {
	var p stack.Ports
	ps := []*int{&p.NATS, &p.Postgres, &p.ClickHouseTCP, &p.ClickHouseHTTP, &p.IngestHTTP, &p.ReportingHTTP, &p.TaggingHTTP}
	for i := range 5 {
		ps = append(ps, &p.GRPC[i], &p.Admin[i])
	}
	seen := map[int]bool{}
	for _, q := range ps {
		for *q == 0 || seen[*q] {
			n, err := localinfra.FreePort()
			if err != nil {
				return p, err
			}
			*q = n
		}
		seen[*q] = true
	}
	return p, nil
}

func readAcks(path string) ([]loadgen.Ack, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return loadgen.ReadAcks(f)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
