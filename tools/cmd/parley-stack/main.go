// Command parley-stack runs the whole of Parley on this machine (`make run`):
// embedded NATS JetStream, PostgreSQL and ClickHouse from the machine's
// packages with their data under --dir, an SMTP catcher keeping every mail
// in --dir/mail, and the five services. It prints the
// endpoints, a demo API key and commands to try, and stops everything on
// Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/parley-dev/parley/tools/stack"
)

func main() {
	dir := flag.String("dir", envOr("PARLEY_STACK_DIR", ".parley"), "directory for all local data and logs (env PARLEY_STACK_DIR)")
	syncAlways := flag.Bool("sync-always", os.Getenv("PARLEY_STACK_SYNC_ALWAYS") == "true", "fsync JetStream before every ack (production setting; env PARLEY_STACK_SYNC_ALWAYS=true)")
	logLevel := flag.String("log-level", envOr("PARLEY_LOG_LEVEL", "info"), "service log level")
	binDir := flag.String("bin-dir", os.Getenv("PARLEY_STACK_BIN_DIR"), "run each service as its own process from the binaries in this directory instead of in this process (env PARLEY_STACK_BIN_DIR; build them with `make build`)")
	// PARLEY_STACK_LIFECYCLE_REPLICAS is the older name, kept as an alias.
	replicas := flag.Int("replicas", envInt("PARLEY_STACK_REPLICAS", envInt("PARLEY_STACK_LIFECYCLE_REPLICAS", 1)), "replicas of every service to run; the consumers' replicas divide the event log's partitions, the extra ones listen on free ports (env PARLEY_STACK_REPLICAS)")
	pprofAddr := flag.String("pprof-addr", os.Getenv("PARLEY_STACK_PPROF_ADDR"), "serve /debug/pprof of this process (the embedded NATS server) on this address, e.g. 127.0.0.1:7200 (env PARLEY_STACK_PPROF_ADDR; off when empty)")
	flag.Parse()

	if *pprofAddr != "" {
		go func() {
			// http.DefaultServeMux carries net/http/pprof's handlers.
			if err := http.ListenAndServe(*pprofAddr, nil); err != nil {
				fmt.Fprintln(os.Stderr, "parley-stack: pprof:", err)
			}
		}()
	}
	if err := run(*dir, *syncAlways, *logLevel, *binDir, *replicas); err != nil {
		fmt.Fprintln(os.Stderr, "parley-stack:", err)
		os.Exit(1)
	}
}

func run(dir string, syncAlways bool, logLevel, binDir string, replicas int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(filepath.Join(dir, "log"), 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "log", "services.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()

	fmt.Println("Starting Parley: NATS JetStream, PostgreSQL, ClickHouse and five services ...")
	started := time.Now()
	st, err := stack.Start(ctx, stack.Options{Dir: dir, SyncAlways: syncAlways, LogOutput: logFile, LogLevel: logLevel, DemoTenant: "demo", BinDir: binDir, Replicas: replicas})
	if err != nil {
		return err
	}
	printBanner(st, logPath, time.Since(started))

	select {
	case <-ctx.Done():
		fmt.Println("\nStopping Parley (draining services, then ClickHouse, PostgreSQL, NATS) ...")
	case err := <-st.Errors():
		fmt.Fprintln(os.Stderr, "a service failed:", err)
	}
	st.Stop()
	fmt.Println("Parley stopped. Data kept in", st.Dir, "- run `make run` again to continue where you left off.")
	return nil
}

func printBanner(st *stack.Stack, logPath string, took time.Duration) {
	grpcurl := "grpcurl"
	if wd, err := os.Getwd(); err == nil {
		if p := filepath.Join(wd, ".bin", "grpcurl"); fileExists(p) {
			grpcurl = p
		}
	}
	fsync := "lazy (JetStream default flush; fast, may lose the last writes on power loss)"
	if st.SyncAlways {
		fsync = "always (fsync before every ack, the production setting)"
	}
	fmt.Printf(`
Parley is ready (%s).

  Service        gRPC                admin (/healthz /readyz /metrics)
`, took.Round(time.Millisecond))
	for _, name := range stack.Services {
		fmt.Printf("  %-13s  %-18s  http://%s\n", name, st.GRPCAddr(name), st.AdminAddr(name))
	}
	for _, r := range st.Replicas() {
		if r.Index > 0 {
			fmt.Printf("  %-13s  127.0.0.1:%-8d  http://127.0.0.1:%d\n", r.Name(), r.GRPC, r.Admin)
		}
	}
	fmt.Printf(`
  ingest HTTP    %s   (JSON API, Rasa broker endpoint /v1/rasa/events)
  NATS           %s   (JetStream sync: %s)
  PostgreSQL     %s
  ClickHouse     %s   (native protocol; database "parley")
  Mail (SMTP)    %s   (a catcher: nothing leaves this machine; every mail is kept in %s)
  Data           %s
  Logs           %s
`, st.IngestHTTPURL(), st.NATSURL, fsync, st.PostgresURL, st.ClickHouseAddr, st.SMTPAddr, st.MailDir, st.Dir, logPath)
	for _, n := range st.Notes {
		fmt.Println("  Note:", n)
	}
	fmt.Printf(`
Demo tenant "demo", API key (all tenant scopes; also in %[10]s/demo-api-key):
  export PARLEY_KEY=%[1]s
Operator key (platform, operator scope; %[10]s/operator-api-key):
  %[7]s
Widget key (publishable, ingest only, from origin %[9]s; %[10]s/widget-api-key):
  %[8]s

Post a message:
  %[2]s -plaintext -H "authorization: Bearer $PARLEY_KEY" \
    -d '{"conversation_id":"demo-1","message":{"message_id":"m1","role":"ROLE_VISITOR","text":"Hello Parley"}}' \
    %[3]s parley.ingest.v1.IngestService/PostMessage

Or over HTTP/JSON:
  curl -s -H "Authorization: Bearer $PARLEY_KEY" \
    -d '{"message":{"role":"ROLE_BOT","text":"Hi! How can I help?"}}' \
    %[6]s/v1/conversations/demo-1/messages

Read it back:
  %[2]s -plaintext -H "authorization: Bearer $PARLEY_KEY" \
    -d '{"conversation_id":"demo-1"}' \
    %[4]s parley.reporting.v1.ReportingService/GetConversation

Read the mail Parley sent (transcripts, reports; from the catcher's directory):
  .bin/parleyctl mail list --dir %[11]s
  .bin/parleyctl mail show <ID> --dir %[11]s

Query ClickHouse:
  clickhouse-client --port %[5]d --database parley \
    -q "SELECT conversation_id, role, text FROM messages ORDER BY occurred_at_us DESC LIMIT 10"

Press Ctrl-C to stop.
`, st.DemoKey, grpcurl, st.GRPCAddr("ingest"), st.GRPCAddr("reporting"), st.Ports.ClickHouseTCP, st.IngestHTTPURL(),
		st.OperatorKey, st.WidgetKey, stack.WidgetOrigin, st.Dir, st.MailDir)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func envInt(k string, d int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return d
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}
