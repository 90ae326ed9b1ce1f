package stack

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/localinfra"
)

// serviceEnv is the environment a service process gets: the stack's
// addresses on top of the caller's environment (so PARLEY_* settings pass
// through).
func (s *Stack) serviceEnv(r Replica) []string {
	name := r.Service
	up := strings.ToUpper(name)
	env := append(os.Environ(),
		"PARLEY_NATS_URL="+s.NATSURL,
		"PARLEY_STREAM_REPLICAS=1",
		"PARLEY_POSTGRES_URL="+s.PostgresURL,
		"PARLEY_CLICKHOUSE_ADDR="+s.ClickHouseAddr,
		"PARLEY_CLICKHOUSE_DATABASE=parley",
		"PARLEY_LOG_LEVEL="+orDefault(s.LogLevel, "info"),
		"PARLEY_"+up+"_GRPC_ADDR="+r.grpcAddr(),
		"PARLEY_"+up+"_ADMIN_ADDR="+r.adminAddr(),
		// Profiles on the loopback admin ports (docs/operations.md).
		"PARLEY_PPROF_ENABLED=true",
	)
	nc := localinfra.NATSServiceConfig(config.NATS{}, name)
	env = append(env, "PARLEY_NATS_USER="+nc.User, "PARLEY_NATS_PASSWORD="+nc.Password,
		"PARLEY_NATS_WAIT_FOR_STREAMS="+strconv.FormatBool(nc.WaitForStreams))
	if m := r.member(); m != "" {
		env = append(env, "PARLEY_PARTITION_MEMBER="+m)
	}
	switch name {
	case "ingest":
		env = append(env, "PARLEY_INGEST_HTTP_ADDR="+r.httpAddr())
		if !s.SyncAlways && os.Getenv("PARLEY_INGEST_COMMIT_MODE") == "" {
			env = append(env, "PARLEY_INGEST_COMMIT_MODE=pipelined")
		}
		if secret, err := s.tokenSecret(); err == nil {
			env = append(env, "PARLEY_INGEST_TOKEN_SECRET="+secret)
		}
		if secret, err := s.piiSecret(); err == nil {
			env = append(env, "PARLEY_INGEST_PII_SECRET="+secret)
		}
	case "tagging":
		env = append(env, "PARLEY_TAGGING_HTTP_ADDR="+r.httpAddr())
	case "notification":
		// Demos deliver webhooks to receivers on this machine.
		env = append(env, "PARLEY_NOTIFICATION_HTTP_ADDR="+r.httpAddr(),
			"PARLEY_NOTIFICATION_ALLOW_PRIVATE_TARGETS=true", "PARLEY_NOTIFICATION_ALLOW_HTTP=true")
		// Mail goes to the catcher unless the caller names a server.
		if os.Getenv("PARLEY_SMTP_HOST") == "" && s.SMTPAddr != "" {
			host, port, _ := net.SplitHostPort(s.SMTPAddr)
			env = append(env, "PARLEY_SMTP_HOST="+host, "PARLEY_SMTP_PORT="+port, "PARLEY_SMTP_TLS=none")
		}
	case "reporting":
		env = append(env, "PARLEY_REPORTING_HTTP_ADDR="+r.httpAddr(),
			"PARLEY_CLICKHOUSE_QUERY_USER="+localinfra.ClickHouseQueryUser, "PARLEY_CLICKHOUSE_QUERY_PASSWORD="+localinfra.ClickHouseQueryPassword,
			"PARLEY_REPORTING_SHARE_BASE_URL="+s.ReportingHTTPURL())
		if os.Getenv("PARLEY_EXPORT_DIR") == "" {
			env = append(env, "PARLEY_EXPORT_DIR="+s.ExportDir)
		}
	}
	return env
}

// Restart backoff of a crashed service process, like Kubernetes'
// CrashLoopBackOff but shorter for a developer's machine: 1s, 2s, 4s, ...
// up to 30s; a process that stayed up restartResetAfter starts over at 1s.
const (
	restartBackoffMin = time.Second
	restartBackoffMax = 30 * time.Second
	restartResetAfter = time.Minute
)

// serviceProc is one supervised service process: the command running now
// and how often it was restarted.
type serviceProc struct {
	name    string
	replica Replica
	mu      sync.Mutex
	cmd     *exec.Cmd
	// restarts counts starts after the first.
	restarts int
}

func (p *serviceProc) current() (*exec.Cmd, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.restarts
}

// Binary is the name of the binary in Options.BinDir that runs the
// services (tools/cmd/parley).
const Binary = "parley"

// startProcesses runs each service as its own process (BinDir/parley
// -target=<service>), logging to Dir/log/<service>.log, and supervises it: a
// process that exits while the stack runs is started again with backoff, as
// Kubernetes would restart a crashed pod, so one crash can be observed and
// recovered from.
func (s *Stack) startProcesses(replicas []Replica) error {
	bin := filepath.Join(s.BinDir, Binary)
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("stack: %s binary: %w (build it with go build -o %s ./tools/cmd/parley)", Binary, err, bin)
	}
	for _, r := range replicas {
		p := &serviceProc{name: r.Name(), replica: r}
		cmd, logf, err := s.launch(r, bin)
		if err != nil {
			return err
		}
		p.cmd = cmd
		s.procs = append(s.procs, p)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.supervise(p, bin, cmd, logf)
		}()
	}
	return nil
}

// launch starts one service replica (the parley binary with its target)
// with its log file.
func (s *Stack) launch(r Replica, bin string) (*exec.Cmd, *os.File, error) {
	name := r.Name()
	logf, err := os.OpenFile(filepath.Join(s.Dir, "log", name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, "-target="+r.Service)
	cmd.Env = s.serviceEnv(r)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("stack: start %s: %w", name, err)
	}
	return cmd, logf, nil
}

// supervise waits for a service process and restarts it with backoff until
// the stack stops. A restart that cannot even start the binary is reported
// on Errors.
func (s *Stack) supervise(p *serviceProc, bin string, cmd *exec.Cmd, logf *os.File) {
	backoff := restartBackoffMin
	for {
		started := time.Now()
		err := cmd.Wait()
		logf.Close()
		if s.stopping.Load() {
			return
		}
		if !s.supervising.Load() {
			// Still starting: report the exit (a port taken by another
			// process makes Start pick new ports) instead of restarting.
			select {
			case s.errc <- fmt.Errorf("%s exited: %w: %s (see %s)", p.name, err, lastLine(logf.Name()), logf.Name()):
			default: // an earlier failure is being reported already
			}
			return
		}
		if time.Since(started) >= restartResetAfter {
			backoff = restartBackoffMin
		}
		s.logStack("service process exited; restarting it", "service", p.name, "error", fmt.Sprint(err),
			"last_log_line", lastLine(logf.Name()), "restart_in", backoff.String())
		select {
		case <-time.After(backoff):
		case <-s.stopCh:
			return
		}
		backoff = min(backoff*2, restartBackoffMax)
		p.mu.Lock()
		if s.stopping.Load() {
			p.mu.Unlock()
			return
		}
		next, nextLog, err := s.launch(p.replica, bin)
		if err != nil {
			p.mu.Unlock()
			s.errc <- fmt.Errorf("%s: restart failed: %w", p.name, err)
			return
		}
		p.cmd, p.restarts = next, p.restarts+1
		p.mu.Unlock()
		cmd, logf = next, nextLog
	}
}

// logStack writes one JSON log line of the stack itself to LogOutput.
func (s *Stack) logStack(msg string, args ...any) {
	if s.LogOutput == nil {
		return
	}
	slog.New(slog.NewJSONHandler(s.LogOutput, nil)).With("service", "parley-stack").Warn(msg, args...)
}

// Restarts returns how often each service process was restarted after a
// crash (empty in-process).
func (s *Stack) Restarts() map[string]int {
	out := map[string]int{}
	for _, p := range s.procs {
		_, n := p.current()
		out[p.name] = n
	}
	return out
}

// stopProcesses asks every service to stop (SIGTERM: graceful drain) and
// kills what is still running after timeout.
func (s *Stack) stopProcesses(timeout time.Duration) {
	s.stopping.Store(true)
	close(s.stopCh)
	signal := func(sig os.Signal) {
		for _, p := range s.procs {
			p.mu.Lock()
			if p.cmd.Process != nil {
				_ = p.cmd.Process.Signal(sig)
			}
			p.mu.Unlock()
		}
	}
	signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		signal(os.Kill)
		<-done
	}
}

// PeakRSS returns each service process's peak resident memory in bytes
// (VmHWM); empty when services run in-process.
func (s *Stack) PeakRSS() map[string]int64 {
	out := map[string]int64{}
	for _, p := range s.procs {
		c, _ := p.current()
		if c.Process == nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Process.Pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				out[p.name] = kb * 1024
			}
		}
	}
	return out
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// PIDs returns the service processes' ids (empty in-process).
func (s *Stack) PIDs() map[string]int {
	out := map[string]int{}
	for _, p := range s.procs {
		if c, _ := p.current(); c.Process != nil {
			out[p.name] = c.Process.Pid
		}
	}
	return out
}

// lastLine returns the last line of a log file (the error a service
// printed before exiting), or "" when it cannot be read.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return lines[len(lines)-1]
}

// InfraPIDs returns the process ids of PostgreSQL's postmaster ("postgres")
// and the ClickHouse server ("clickhouse") the stack started; NATS runs
// inside this process.
func (s *Stack) InfraPIDs() map[string]int {
	out := map[string]int{}
	if s.pg != nil {
		out["postgres"] = s.pg.Pid()
	}
	if s.ch != nil {
		out["clickhouse"] = s.ch.Pid()
	}
	return out
}
