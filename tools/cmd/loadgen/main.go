// Command loadgen sends realistic conversation traffic through Parley's
// ingest gRPC API (generated, or replayed from the Schema-Guided Dialogue
// corpus), prints progress every second and a summary, and can write every
// acknowledgement to an ack log for `parleyctl verify`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/tools/loadgen"
	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	cfg          loadgen.Config
	apiKey       string
	apiKeyTenant string
	tenantKeys   []string
	postgresURL  string
	tenants      int
	ackLog       string
	start        string
}

func newCommand() *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "loadgen",
		Short: "Send realistic conversation traffic to Parley's ingest",
		Long: `loadgen sends generated conversations (tenants, bots, channels, flows that complete or drop off,
unidentified responses, takeovers, goals, leads, costs; closed or left open), or replays the
Schema-Guided Dialogue corpus (--sgd), through ingest's gRPC API. Every event carries a
client_event_id, so failed calls are retried safely. Progress goes to stderr every second, the
summary to stdout. With --ack-log, every acknowledgement is written as a JSON line for
'parleyctl verify'.

Keys: --api-key (default: $PARLEY_API_KEY, else the demo key that 'make run' wrote to
.parley/demo-api-key) for the tenant --api-key-tenant (resolved from PostgreSQL when
--postgres-url is given); --tenant NAME=KEY for more; --tenants N with --postgres-url creates
tenants load-1..load-N with ingest keys (revoked again at the end).`,
		Example: `  loadgen --conversations 1000
  loadgen --duration 1m --rate 5000 --mode stream --ack-log acks.jsonl
  loadgen --postgres-url postgres://parley:parley@127.0.0.1:55432/parley?sslmode=disable --tenants 20 --conversations 20000
  loadgen --sgd /path/to/sgd --conversations 500`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.cfg.IngestAddr, "ingest-addr", envOr("PARLEY_INGEST_ADDR", "localhost:7101"), "ingest gRPC address (env PARLEY_INGEST_ADDR)")
	f.StringVar(&o.apiKey, "api-key", os.Getenv("PARLEY_API_KEY"), "API key with the ingest scope (env PARLEY_API_KEY; default: the demo key of make run)")
	f.StringVar(&o.apiKeyTenant, "api-key-tenant", "demo", "tenant of --api-key (looked up in PostgreSQL when --postgres-url is given)")
	f.StringArrayVar(&o.tenantKeys, "tenant", nil, "another tenant as NAME=KEY (repeatable)")
	f.StringVar(&o.postgresURL, "postgres-url", "", "PostgreSQL URL: resolves --api-key's tenant and creates --tenants")
	f.IntVar(&o.tenants, "tenants", 0, "create N tenants load-1..load-N with ingest keys (needs --postgres-url)")
	f.IntVar(&o.cfg.Conversations, "conversations", 0, "conversations to generate (default 1000, or unlimited with --duration); with --sgd the most dialogues to replay (default all)")
	f.Float64Var(&o.cfg.Rate, "rate", 0, "target events per second across all senders (0: as fast as possible)")
	f.DurationVar(&o.cfg.Duration, "duration", 0, "stop after this long (0: when every conversation is sent)")
	f.IntVar(&o.cfg.Concurrency, "concurrency", 8, "concurrent senders")
	f.StringVar(&o.cfg.Mode, "mode", loadgen.ModeBatch, "batch (Append), stream (AppendStream) or single (one event per call)")
	f.IntVar(&o.cfg.BatchSize, "batch-size", 100, "events per request (at most 1000)")
	f.Int64Var(&o.cfg.Seed, "seed", 1, "seed of the scenarios")
	f.IntVar(&o.cfg.Bots, "bots", 3, "bots per tenant (generated mode)")
	f.StringVar(&o.cfg.SGDDir, "sgd", "", "replay this Schema-Guided Dialogue corpus directory (the train_dialogues_NNN.json[.gz] files of Google's Schema-Guided Dialogue dataset)")
	f.Float64Var(&o.cfg.CloseFraction, "close-fraction", 0.7, "share of generated conversations the client closes (0 or less: none)")
	f.DurationVar(&o.cfg.Spread, "spread", time.Hour, "conversations start spread over this window, ending now")
	f.StringVar(&o.start, "start", "", "occurred_at of the first conversation, RFC 3339 (default: now - spread)")
	f.StringVar(&o.cfg.RunID, "run-id", "", "prefix that makes conversation ids unique (default: from the current time)")
	f.StringVar(&o.ackLog, "ack-log", "", "write every acknowledgement as a JSON line to FILE (for parleyctl verify)")
	return cmd
}

// maxShownErrors is how many failed calls are printed.
const maxShownErrors = 10

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// demoKey reads the key that `make run` saved, if any.
func demoKey() string {
	dir := envOr("PARLEY_STACK_DIR", ".parley")
	b, err := os.ReadFile(filepath.Join(dir, "demo-api-key"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// parseTenantKeys reads NAME=KEY flags.
func parseTenantKeys(flags []string, into map[string]string) error {
	for _, f := range flags {
		name, key, ok := strings.Cut(f, "=")
		if !ok || name == "" || key == "" {
			return fmt.Errorf("--tenant %q: want NAME=KEY", f)
		}
		into[name] = key
	}
	return nil
}

func (o *options) run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg := o.cfg
	cfg.Keys = map[string]string{}
	if o.cfg.CloseFraction <= 0 {
		cfg.CloseFraction = -1 // none
	}
	if o.start != "" {
		t, err := time.Parse(time.RFC3339, o.start)
		if err != nil {
			return fmt.Errorf("--start: %w", err)
		}
		cfg.Start = t
	}
	if err := parseTenantKeys(o.tenantKeys, cfg.Keys); err != nil {
		return err
	}
	key := o.apiKey
	if key == "" && len(cfg.Keys) == 0 && o.tenants == 0 {
		key = demoKey()
		if key == "" {
			return errors.New("no API key: pass --api-key, set PARLEY_API_KEY, or start the stack with make run (it writes .parley/demo-api-key)")
		}
	}
	if o.tenants > 0 && o.postgresURL == "" {
		return errors.New("--tenants needs --postgres-url")
	}
	if o.postgresURL != "" {
		revoke, err := o.prepareTenants(ctx, key, cfg.Keys, stderr)
		if err != nil {
			return err
		}
		defer revoke()
	} else if key != "" {
		cfg.Keys[o.apiKeyTenant] = key
	}
	if o.ackLog != "" {
		f, err := os.Create(o.ackLog)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.AckLog = f
	}
	cfg.Progress = func(s loadgen.Stats) { fmt.Fprintln(stderr, s) }
	var (
		errMu  sync.Mutex
		failed int
	)
	cfg.OnError = func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		switch failed++; {
		case failed <= maxShownErrors:
			fmt.Fprintln(stderr, "error:", err)
		case failed == maxShownErrors+1:
			fmt.Fprintln(stderr, "error: more calls failed; the summary counts their events")
		}
	}

	st, err := loadgen.Run(ctx, cfg)
	summary(stdout, cfg, o.ackLog, st)
	switch {
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted; the ack log holds everything acknowledged so far")
	case err != nil:
		return err
	case st.Errors > 0:
		return fmt.Errorf("%d events failed (see the errors above); their conversations were left unfinished", st.Errors)
	}
	return nil
}

// prepareTenants resolves the --api-key's tenant and creates --tenants
// tenants with fresh ingest keys. The returned function revokes those keys.
func (o *options) prepareTenants(ctx context.Context, key string, keys map[string]string, stderr io.Writer) (func(), error) {
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: o.postgresURL, MaxConns: 2})
	if err != nil {
		return nil, err
	}
	if err := tenancy.Migrate(ctx, pool, nil); err != nil {
		pool.Close()
		return nil, err
	}
	store := tenancy.NewStore(pool)
	if key != "" {
		p, err := store.Authenticate(ctx, key)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("--api-key: %w", err)
		}
		keys[p.TenantID] = key
	}
	type created struct{ tenant, id string }
	var made []created
	for i := 1; i <= o.tenants; i++ {
		t := fmt.Sprintf("load-%d", i)
		if err := store.CreateTenant(ctx, t, "Load test tenant "+t); err != nil && !errors.Is(err, tenancy.ErrExists) {
			pool.Close()
			return nil, err
		}
		k, id, err := store.CreateAPIKey(ctx, t, "loadgen", []string{grpcx.ScopeIngest})
		if err != nil {
			pool.Close()
			return nil, err
		}
		keys[t] = k
		made = append(made, created{t, id})
	}
	if o.tenants > 0 {
		fmt.Fprintf(stderr, "tenants load-1..load-%d ready with ingest keys\n", o.tenants)
	}
	return func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, c := range made {
			_ = store.RevokeAPIKey(rctx, c.tenant, c.id)
		}
		pool.Close()
	}, nil
}

func summary(w io.Writer, cfg loadgen.Config, ackLog string, s loadgen.Stats) {
	source := "generated"
	if cfg.SGDDir != "" {
		source = "SGD replay of " + cfg.SGDDir
	}
	fmt.Fprintf(w, "loadgen: %s traffic, mode %s, %d senders, %d tenants, %.1fs\n", source, cfg.Mode, cfg.Concurrency, len(cfg.Keys), s.Elapsed.Seconds())
	fmt.Fprintf(w, "  conversations  %d completed\n", s.Conversations)
	fmt.Fprintf(w, "  events         %d sent, %d acknowledged (%d duplicates), %d errors\n", s.Events, s.Acked, s.Duplicates, s.Errors)
	fmt.Fprintf(w, "  messages       %d, closes %d\n", s.Messages, s.Closes)
	fmt.Fprintf(w, "  throughput     %.0f events/s\n", s.EventsPerSecond())
	fmt.Fprintf(w, "  ack latency    p50 %s, p99 %s per call\n", s.AckP50.Round(10*time.Microsecond), s.AckP99.Round(10*time.Microsecond))
	if ackLog != "" {
		fmt.Fprintf(w, "  ack log        %s (check it with: parleyctl verify --acks %s)\n", ackLog, ackLog)
	}
}
