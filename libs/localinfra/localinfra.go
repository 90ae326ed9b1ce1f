// Package localinfra runs Parley's dependencies on one machine: an embedded
// NATS JetStream server, a private PostgreSQL cluster and a ClickHouse server,
// each with its data in a directory of the caller's choosing. The local stack
// (make run) and the test environment (libs/testenv) are built from it.
package localinfra

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// MissingError reports a dependency that is not installed, with the command
// that installs it.
type MissingError struct {
	What    string
	Install string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s is not installed; install it with: %s", e.What, e.Install)
}

// Process is a child process started by this package.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	// stopSignal is what Stop sends first (SIGTERM unless the server prefers another).
	stopSignal syscall.Signal
	once       sync.Once
}

func startProcess(name string, cmd *exec.Cmd, stopSignal syscall.Signal, out io.Writer) (*Process, error) {
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Own process group, so a terminal's Ctrl-C reaches only the runner, which
	// then stops children in order; and die with the parent if it is killed.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("localinfra: start %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, done: make(chan struct{}), stopSignal: stopSignal}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Stop asks the process to shut down and waits up to timeout before killing it.
func (p *Process) Stop(timeout time.Duration) error {
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(p.stopSignal)
		select {
		case <-p.done:
		case <-time.After(timeout):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	// Below the kernel's ephemeral range (32768-60999 by default), so that
	// an outgoing connection, whose local port comes from that range, cannot
	// take the port between now and when a server binds it.
	for range 100 {
		p := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ensureFree fails when something already listens on one of the ports, so a
// readiness probe cannot be answered by another server.
func ensureFree(what string, ports ...int) error {
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return fmt.Errorf("localinfra: %s port %d is in use (another instance running? stop it or choose other ports): %w", what, p, err)
		}
		l.Close()
	}
	return nil
}

func waitFor(ctx context.Context, p *Process, what string, timeout time.Duration, probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if err := probe(ctx); err == nil {
			return nil
		} else {
			last = err
		}
		select {
		case <-p.done:
			return fmt.Errorf("localinfra: %s exited during startup: %v", what, p.err)
		case <-ctx.Done():
			return fmt.Errorf("localinfra: %s not ready after %s: %v", what, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func lookPath(candidates ...string) (string, error) {
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", errors.New("not found")
}
