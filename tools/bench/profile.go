package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"
)

// profiler saves Go profiles of every process of the suite into a
// directory: each service replica's from its admin port (/debug/pprof,
// which the stack enables), and this process's (the stack runner, which
// runs the embedded NATS server) with runtime/pprof. A nil profiler does
// nothing, so phases call it unconditionally.
type profiler struct {
	dir   string
	admin map[string]string // replica name → admin address
	logf  logFunc
}

func newProfiler(dir string, s *suite, logf logFunc) (*profiler, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	admin := map[string]string{}
	for _, r := range s.Replicas() {
		admin[r.Name()] = fmt.Sprintf("127.0.0.1:%d", r.Admin)
	}
	return &profiler{dir: dir, admin: admin, logf: logf}, nil
}

// cpu starts d-long CPU profiles of every service and of this process,
// saved as <label>-<process>.cpu.pprof; the returned func waits for them.
func (p *profiler) cpu(ctx context.Context, label string, d time.Duration) (wait func()) {
	if p == nil {
		return func() {}
	}
	var wg sync.WaitGroup
	secs := max(1, int(d.Seconds()))
	for name, addr := range p.admin {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), label+"-"+name+".cpu.pprof", d+30*time.Second)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		path := filepath.Join(p.dir, label+"-nats-runner.cpu.pprof")
		f, err := os.Create(path)
		if err != nil {
			p.logf("profile: %v", err)
			return
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			p.logf("profile: runner: %v", err)
			return
		}
		sleepCtx(ctx, d)
		pprof.StopCPUProfile()
	}()
	return wg.Wait
}

// heap saves every service's heap profile (inuse and alloc samples) as
// <label>-<process>.heap.pprof.
func (p *profiler) heap(ctx context.Context, label string) {
	if p == nil {
		return
	}
	var wg sync.WaitGroup
	for name, addr := range p.admin {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/heap", addr), label+"-"+name+".heap.pprof", 30*time.Second)
		}()
	}
	wg.Wait()
}

func (p *profiler) fetch(ctx context.Context, url, file string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		p.logf("profile %s: %v", file, err)
		return
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.logf("profile %s: %v", file, err)
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		p.logf("profile %s: %s", file, res.Status)
		return
	}
	f, err := os.Create(filepath.Join(p.dir, file))
	if err != nil {
		p.logf("profile %s: %v", file, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, res.Body); err != nil {
		p.logf("profile %s: %v", file, err)
	}
}
