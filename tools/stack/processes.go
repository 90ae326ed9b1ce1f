package stack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/localinfra"
)

// serviceEnv is the environment a service binary gets: the stack's
// addresses on top of the caller's environment (so PARLEY_* settings pass
// through).
func (s *Stack) serviceEnv(name string) []string {
	up := strings.ToUpper(name)
	env := append(os.Environ(),
		"PARLEY_NATS_URL="+s.NATSURL,
		"PARLEY_STREAM_REPLICAS=1",
		"PARLEY_POSTGRES_URL="+s.PostgresURL,
		"PARLEY_CLICKHOUSE_ADDR="+s.ClickHouseAddr,
		"PARLEY_CLICKHOUSE_DATABASE=parley",
		"PARLEY_LOG_LEVEL="+orDefault(s.LogLevel, "info"),
		"PARLEY_"+up+"_GRPC_ADDR="+s.GRPCAddr(name),
		"PARLEY_"+up+"_ADMIN_ADDR="+s.AdminAddr(name),
		// Profiles on the loopback admin ports (docs/operations.md).
		"PARLEY_PPROF_ENABLED=true",
	)
	nc := localinfra.NATSServiceConfig(config.NATS{}, name)
	env = append(env, "PARLEY_NATS_USER="+nc.User, "PARLEY_NATS_PASSWORD="+nc.Password,
		"PARLEY_NATS_WAIT_FOR_STREAMS="+strconv.FormatBool(nc.WaitForStreams))
	switch name {
	case "ingest":
		env = append(env, fmt.Sprintf("PARLEY_INGEST_HTTP_ADDR=127.0.0.1:%d", s.Ports.IngestHTTP))
		if !s.SyncAlways && os.Getenv("PARLEY_INGEST_COMMIT_MODE") == "" {
			env = append(env, "PARLEY_INGEST_COMMIT_MODE=pipelined")
		}
	case "reporting":
		env = append(env, fmt.Sprintf("PARLEY_REPORTING_HTTP_ADDR=127.0.0.1:%d", s.Ports.ReportingHTTP),
			"PARLEY_CLICKHOUSE_QUERY_USER="+localinfra.ClickHouseQueryUser, "PARLEY_CLICKHOUSE_QUERY_PASSWORD="+localinfra.ClickHouseQueryPassword,
			"PARLEY_REPORTING_SHARE_BASE_URL="+s.ReportingHTTPURL())
	}
	return env
}

// startProcesses runs each service's binary from BinDir as its own process,
// logging to Dir/log/<service>.log.
func (s *Stack) startProcesses() error {
	for _, name := range Services {
		bin := filepath.Join(s.BinDir, name)
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("stack: %s binary: %w (build it with go build -o %s ./services/%s/cmd/%s)", name, err, s.BinDir, name, name)
		}
		logf, err := os.OpenFile(filepath.Join(s.Dir, "log", name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		cmd := exec.Command(bin)
		cmd.Env = s.serviceEnv(name)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("stack: start %s: %w", name, err)
		}
		s.procs = append(s.procs, cmd)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer logf.Close()
			if err := cmd.Wait(); err != nil && !s.stopping.Load() {
				s.errc <- fmt.Errorf("%s exited: %w: %s (see %s)", name, err, lastLine(logf.Name()), logf.Name())
			}
		}()
	}
	return nil
}

// stopProcesses asks every service to stop (SIGTERM: graceful drain) and
// kills what is still running after timeout.
func (s *Stack) stopProcesses(timeout time.Duration) {
	s.stopping.Store(true)
	for _, c := range s.procs {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		for _, c := range s.procs {
			_ = c.Process.Kill()
		}
		<-done
	}
}

// PeakRSS returns each service process's peak resident memory in bytes
// (VmHWM); empty when services run in-process.
func (s *Stack) PeakRSS() map[string]int64 {
	out := map[string]int64{}
	for i, c := range s.procs {
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
				out[Services[i]] = kb * 1024
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
	for i, c := range s.procs {
		if c.Process != nil {
			out[Services[i]] = c.Process.Pid
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
