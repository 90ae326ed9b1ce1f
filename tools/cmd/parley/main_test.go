package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/testenv"
)

// build compiles this command into a temp dir.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "parley")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// cleanEnv is this process's environment without PARLEY_* settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PARLEY_") {
			env = append(env, kv)
		}
	}
	return env
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := localinfra.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// TestUnknownTargetFails: a target that is not a service stops the binary
// before anything starts, with a message naming it and the valid targets.
func TestUnknownTargetFails(t *testing.T) {
	bin := build(t)
	for _, args := range [][]string{{"-target=ingest,bogus"}, {"--target", "bogus"}, {"-target="}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cleanEnv(), "PARLEY_NATS_URL=nats://127.0.0.1:1") // never reached
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Fatalf("%v: exit %v, want status 2; stderr:\n%s", args, err, stderr.String())
		}
		msg := stderr.String()
		want := `unknown target "bogus"`
		if args[0] == "-target=" {
			want = "no target"
		}
		if !strings.Contains(msg, want) || strings.Contains(msg, "service started") {
			t.Fatalf("%v: stderr %q, want %q and nothing started", args, msg, want)
		}
		for _, name := range append(service.Names(), "all") {
			if !strings.Contains(msg, name) {
				t.Fatalf("%v: stderr %q does not list target %s", args, msg, name)
			}
		}
	}
}

// TestTargets runs the binary against real NATS, PostgreSQL and ClickHouse
// with -target=all and with two targets: every target it was given answers
// /readyz on its own admin port, the others do not run, and SIGTERM stops
// all of them gracefully (exit status 0).
func TestTargets(t *testing.T) {
	bin := build(t)
	nats := testenv.NATS(t)
	pgURL := testenv.Postgres(t)
	ch := testenv.ClickHouse(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-target=all"}, service.Names()},
		{[]string{"--target", "reporting, ingest"}, []string{"ingest", "reporting"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			env := append(cleanEnv(),
				"PARLEY_NATS_URL="+nats.URL, "PARLEY_POSTGRES_URL="+pgURL, "PARLEY_POSTGRES_MAX_CONNS=4",
				"PARLEY_CLICKHOUSE_ADDR="+ch.Addr, "PARLEY_CLICKHOUSE_DATABASE="+ch.Database,
				"PARLEY_SHUTDOWN_TIMEOUT=10s", "PARLEY_INGEST_HTTP_ADDR="+freeAddr(t), "PARLEY_REPORTING_HTTP_ADDR="+freeAddr(t))
			admin := map[string]string{}
			for _, name := range service.Names() {
				admin[name] = freeAddr(t)
				up := "PARLEY_" + strings.ToUpper(name)
				env = append(env, up+"_GRPC_ADDR="+freeAddr(t), up+"_ADMIN_ADDR="+admin[name])
			}
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = env
			logs, err := os.Create(filepath.Join(t.TempDir(), "parley.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer logs.Close()
			cmd.Stderr = logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				if cmd.ProcessState == nil {
					_ = cmd.Process.Kill()
					<-done
				}
			}()

			deadline := time.Now().Add(2 * time.Minute)
			for _, name := range tc.want {
				for !ready(admin[name]) {
					select {
					case err := <-done:
						t.Fatalf("parley exited (%v) before %s was ready:\n%s", err, name, readLog(logs))
					default:
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s not ready on %s:\n%s", name, admin[name], readLog(logs))
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			for _, name := range service.Names() {
				if !slices.Contains(tc.want, name) {
					if c, err := net.DialTimeout("tcp", admin[name], time.Second); err == nil {
						c.Close()
						t.Fatalf("%s is listening on %s though it is not a target", name, admin[name])
					}
				}
			}

			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("after SIGTERM: %v\n%s", err, readLog(logs))
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("parley did not stop within 60s of SIGTERM:\n%s", readLog(logs))
			}
			started, stopped := logged(t, readLog(logs))
			for _, name := range tc.want {
				if !started[name] || !stopped[name] {
					t.Errorf("%s: started %v, stopped %v in the log", name, started[name], stopped[name])
				}
			}
			for name := range started {
				if !slices.Contains(tc.want, name) {
					t.Errorf("%s started though it is not a target", name)
				}
			}
		})
	}
}

func ready(addr string) bool {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// logged returns the services whose "service started" and "service stopped"
// lines are in the JSON log.
func logged(t *testing.T, log string) (started, stopped map[string]bool) {
	started, stopped = map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct{ Msg, Service string }
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch line.Msg {
		case "service started":
			started[line.Service] = true
		case "service stopped":
			stopped[line.Service] = true
		}
	}
	return started, stopped
}

// readLog returns what the process wrote to f so far.
func readLog(f *os.File) string {
	b, _ := os.ReadFile(f.Name())
	return string(b)
}
