// Package stack runs the whole of Parley on one machine: embedded NATS
// JetStream, a private PostgreSQL cluster and a private ClickHouse server with
// their data under one directory, an SMTP catcher keeping every mail in
// <dir>/mail, and the five services in this process. It
// is what `make run` starts, and what end-to-end tests start in a temp dir.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/localinfra/mailcatcher"
	"github.com/parley-dev/parley/libs/natsauth"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/telemetry"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/services/ingest"
	"github.com/parley-dev/parley/services/lifecycle"
	"github.com/parley-dev/parley/services/notification"
	"github.com/parley-dev/parley/services/reporting"
	"github.com/parley-dev/parley/services/tagging"
)

// Ports of the local stack. Zero values are replaced by defaults (or free
// ports when Options.FreePorts is set).
type Ports struct {
	NATS, Postgres, ClickHouseTCP, ClickHouseHTTP int
	// GRPC and Admin are indexed like Services.
	GRPC, Admin [5]int
	// IngestHTTP serves ingest's HTTP/JSON API and the Rasa endpoint.
	IngestHTTP int
	// ReportingHTTP serves reporting's HTTP/JSON API and share links.
	ReportingHTTP int
	// SMTP is the mail catcher's port (notification sends there).
	SMTP int
	// TaggingHTTP serves tagging's HTTP/JSON API (PreviewRule).
	TaggingHTTP int
	// NotificationHTTP serves notification's HTTP/JSON API.
	NotificationHTTP int
}

// Services lists the services in start order.
var Services = [5]string{"ingest", "lifecycle", "tagging", "reporting", "notification"}

// DefaultPorts are the ports `make run` uses.
func DefaultPorts() Ports {
	return Ports{
		NATS: 4222, Postgres: 55432, ClickHouseTCP: 19000, ClickHouseHTTP: 18123,
		GRPC:             [5]int{7101, 7102, 7103, 7104, 7105},
		Admin:            [5]int{7201, 7202, 7203, 7204, 7205},
		IngestHTTP:       7301,
		ReportingHTTP:    7304,
		SMTP:             1025,
		TaggingHTTP:      7303,
		NotificationHTTP: 7305,
	}
}

// Options configure the stack.
type Options struct {
	// Dir holds every store's data, the logs and the demo key.
	Dir   string
	Ports Ports
	// FreePorts picks free ports for every zero port instead of defaults.
	FreePorts bool
	// BinDir, when set, holds the parley binary (tools/cmd/parley): each
	// service then runs as its own process (parley -target=<service>),
	// configured through PARLEY_* environment variables, instead of inside
	// this one. The benchmark uses it to measure each service's memory.
	BinDir string
	// SyncAlways makes JetStream fsync before acknowledging (production
	// setting); the local stack defaults to JetStream's lazy flush.
	SyncAlways bool
	// LogOutput receives the services' JSON logs.
	LogOutput io.Writer
	// LogLevel of the services.
	LogLevel string
	// DemoTenant is created with demo API keys (EnsureDemoKeys) when set.
	DemoTenant string
	// Replicas is how many replicas of every service run (default 1), in
	// process and in-process mode alike. Replica 0 keeps Ports; the others
	// (named <service>-<i>) listen on free ports, and the consumers among
	// them divide the log's partitions with the first as members
	// <service>-<i>.
	Replicas int
}

// Replica is one running replica of a service.
type Replica struct {
	Service string
	// Index is 0 for the replica on the stack's ports.
	Index int
	// GRPC and Admin are its ports; HTTP its HTTP/JSON port (ingest,
	// tagging and reporting only).
	GRPC, Admin, HTTP int
}

// Name is the service for replica 0, else <service>-<index>.
func (r Replica) Name() string {
	if r.Index == 0 {
		return r.Service
	}
	return fmt.Sprintf("%s-%d", r.Service, r.Index)
}

// member is the partition member id of an extra replica ("" for replica 0:
// the service's default).
func (r Replica) member() string {
	if r.Index == 0 {
		return ""
	}
	return r.Name()
}

func (r Replica) grpcAddr() string  { return fmt.Sprintf("127.0.0.1:%d", r.GRPC) }
func (r Replica) adminAddr() string { return fmt.Sprintf("127.0.0.1:%d", r.Admin) }
func (r Replica) httpAddr() string  { return fmt.Sprintf("127.0.0.1:%d", r.HTTP) }

// Stack is a running local stack.
type Stack struct {
	Options
	NATSURL        string
	PostgresURL    string
	ClickHouseAddr string
	// SMTPAddr is the mail catcher's address (host:port); MailDir where it
	// keeps what it receives (parleyctl mail list|show read it).
	SMTPAddr, MailDir string
	// ExportDir keeps reporting's export files (unless PARLEY_EXPORT_DIR or
	// PARLEY_EXPORT_BUCKET_URL say otherwise).
	ExportDir string
	// DemoKey is an API key of DemoTenant with every tenant scope,
	// OperatorKey a platform key (operator scope), WidgetKey a publishable
	// key of DemoTenant for WidgetOrigin.
	DemoKey, OperatorKey, WidgetKey string
	// Notes are things the operator should know about this start.
	Notes []string

	nats    *server.Server
	mail    *mailcatcher.Catcher
	pg      *localinfra.Postgres
	ch      *localinfra.ClickHouse
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errc    chan error
	stopped sync.Once
	// procs are the service processes when BinDir is set.
	procs    []*serviceProc
	stopping atomic.Bool
	// supervising is set once every service was ready: from then on a
	// crashed process is restarted rather than reported.
	supervising atomic.Bool
	// stopCh is closed when the stack stops (ends restart backoffs).
	stopCh chan struct{}
	// replicas of every service, replica 0 of each first in Services order.
	replicas []Replica
}

// Replicas returns every service replica of the stack.
func (s *Stack) Replicas() []Replica { return slices.Clone(s.replicas) }

// planReplicas assigns ports: replica 0 of each service the stack's, the
// others free ones.
func (s *Stack) planReplicas() error {
	n := max(s.Options.Replicas, 1)
	for i := range n {
		for k, name := range Services {
			r := Replica{Service: name, Index: i, GRPC: s.Ports.GRPC[k], Admin: s.Ports.Admin[k]}
			switch name {
			case "ingest":
				r.HTTP = s.Ports.IngestHTTP
			case "reporting":
				r.HTTP = s.Ports.ReportingHTTP
			case "tagging":
				r.HTTP = s.Ports.TaggingHTTP
			case "notification":
				r.HTTP = s.Ports.NotificationHTTP
			}
			if i > 0 {
				ports := []*int{&r.GRPC, &r.Admin}
				if r.HTTP != 0 {
					ports = append(ports, &r.HTTP)
				}
				for _, p := range ports {
					var err error
					if *p, err = localinfra.FreePort(); err != nil {
						return err
					}
				}
			}
			s.replicas = append(s.replicas, r)
		}
	}
	return nil
}

// GRPCAddr returns a service's gRPC address.
func (s *Stack) GRPCAddr(service string) string {
	return fmt.Sprintf("127.0.0.1:%d", s.Ports.GRPC[index(service)])
}

// IngestHTTPURL is the base URL of ingest's HTTP/JSON API.
func (s *Stack) IngestHTTPURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.Ports.IngestHTTP)
}

// ReportingHTTPURL is the base URL of reporting's HTTP/JSON API.
func (s *Stack) ReportingHTTPURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.Ports.ReportingHTTP)
}

// AdminAddr returns a service's admin address.
func (s *Stack) AdminAddr(service string) string {
	return fmt.Sprintf("127.0.0.1:%d", s.Ports.Admin[index(service)])
}

func index(service string) int {
	for i, n := range Services {
		if n == service {
			return i
		}
	}
	panic("stack: unknown service " + service)
}

func (o *Options) fill() error {
	def := DefaultPorts()
	pick := func(p *int, d int) error {
		if *p != 0 {
			return nil
		}
		if !o.FreePorts {
			*p = d
			return nil
		}
		var err error
		*p, err = localinfra.FreePort()
		return err
	}
	ps := []*int{&o.Ports.NATS, &o.Ports.Postgres, &o.Ports.ClickHouseTCP, &o.Ports.ClickHouseHTTP, &o.Ports.IngestHTTP, &o.Ports.ReportingHTTP, &o.Ports.SMTP, &o.Ports.TaggingHTTP, &o.Ports.NotificationHTTP}
	ds := []int{def.NATS, def.Postgres, def.ClickHouseTCP, def.ClickHouseHTTP, def.IngestHTTP, def.ReportingHTTP, def.SMTP, def.TaggingHTTP, def.NotificationHTTP}
	for i := range 5 {
		ps = append(ps, &o.Ports.GRPC[i], &o.Ports.Admin[i])
		ds = append(ds, def.GRPC[i], def.Admin[i])
	}
	for i := range ps {
		if err := pick(ps[i], ds[i]); err != nil {
			return err
		}
	}
	if o.LogOutput == nil {
		o.LogOutput = io.Discard
	}
	var err error
	o.Dir, err = filepath.Abs(o.Dir)
	return err
}

// Start brings everything up and returns once every service is ready.
// With FreePorts, a port taken between being picked and being bound (by
// another process doing the same) is met by picking new ports, up to three
// times.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	for attempt := 1; ; attempt++ {
		st, err := start(ctx, opts)
		if err == nil || !opts.FreePorts || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return st, err
		}
	}
}

func start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	st := &Stack{Options: opts, errc: make(chan error, 8), stopCh: make(chan struct{})}
	defer func() {
		if err != nil {
			st.Stop()
		}
	}()
	if err := os.MkdirAll(filepath.Join(opts.Dir, "log"), 0o755); err != nil {
		return nil, err
	}
	infraLog, err := os.OpenFile(filepath.Join(opts.Dir, "log", "infra.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}

	// Each service connects as its own NATS user with the production
	// permissions (libs/natsauth); tools without credentials act as the
	// operator.
	if st.nats, err = localinfra.StartNATS(localinfra.NATSOptions{Dir: filepath.Join(opts.Dir, "nats"), Port: opts.Ports.NATS, SyncAlways: opts.SyncAlways,
		Passwords: localinfra.NATSLocalPasswords(), AnonymousAs: natsauth.Operator}); err != nil {
		return nil, err
	}
	st.NATSURL = st.nats.ClientURL()

	// Every mail the services send lands in the catcher's directory.
	st.MailDir = filepath.Join(opts.Dir, "mail")
	st.ExportDir = filepath.Join(opts.Dir, "exports")
	if st.mail, err = mailcatcher.Start(mailcatcher.Options{Dir: st.MailDir, Addr: fmt.Sprintf("127.0.0.1:%d", opts.Ports.SMTP)}); err != nil {
		return nil, err
	}
	st.SMTPAddr = st.mail.Addr()

	pgDir := filepath.Join(opts.Dir, "postgres")
	if !localinfra.PostgresCanReach(pgDir) {
		// PostgreSQL runs as the postgres user, who cannot enter this
		// directory; keep its data where it can, keyed by the stack dir.
		pgDir = filepath.Join("/var/lib/parley", strings.ReplaceAll(strings.Trim(opts.Dir, "/"), "/", "_"), "postgres")
		st.Notes = append(st.Notes, "PostgreSQL data is in "+pgDir+" (the postgres user cannot enter "+opts.Dir+")")
	}
	if st.pg, err = localinfra.StartPostgres(ctx, localinfra.PostgresOptions{
		Dir: pgDir, Port: opts.Ports.Postgres,
		Database: "parley", User: "parley", Password: "parley", Durable: true, Output: infraLog,
	}); err != nil {
		return nil, err
	}
	st.PostgresURL = st.pg.URL

	if st.ch, err = localinfra.StartClickHouse(ctx, localinfra.ClickHouseOptions{
		Dir: filepath.Join(opts.Dir, "clickhouse"), TCPPort: opts.Ports.ClickHouseTCP, HTTPPort: opts.Ports.ClickHouseHTTP, Output: infraLog,
	}); err != nil {
		return nil, err
	}
	st.ClickHouseAddr = st.ch.Addr

	if opts.DemoTenant != "" {
		if err = st.ensureDemo(ctx); err != nil {
			return nil, err
		}
	}

	if err := st.planReplicas(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	st.cancel = cancel
	// The first replica of every service, then the others once it is ready:
	// replica 0 runs the database migrations, which are not safe to run
	// from two replicas at once (a ClickHouse RENAME races).
	first, extra := st.replicas[:len(Services)], st.replicas[len(Services):]
	for _, group := range [][]Replica{first, extra} {
		if opts.BinDir != "" {
			err = st.startProcesses(group)
		} else {
			err = st.startServices(runCtx, group)
		}
		if err != nil {
			return nil, err
		}
		if err := st.waitReady(ctx, group, 90*time.Second); err != nil {
			return nil, err
		}
	}
	// From now on a crashed service process is restarted (process mode).
	st.supervising.Store(true)
	return st, nil
}

func (s *Stack) startServices(ctx context.Context, replicas []Replica) error {
	for _, r := range replicas {
		tel, err := telemetry.New(ctx, telemetry.Config{Service: r.Name(), LogLevel: s.LogLevel, LogOutput: s.LogOutput})
		if err != nil {
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer tel.Shutdown(context.Background()) //nolint:errcheck
			if err := s.runReplica(ctx, tel, r); err != nil {
				s.errc <- fmt.Errorf("%s: %w", r.Name(), err)
			}
		}()
	}
	return nil
}

// runReplica runs one service replica in this process: the documented
// defaults (and PARLEY_<SERVICE>_* from the environment) with the stack's
// addresses and the replica's ports and member id.
func (s *Stack) runReplica(ctx context.Context, tel *telemetry.Telemetry, r Replica) error {
	// Profiles on the admin ports (loopback) for the profiling recipe and
	// make bench (docs/operations.md).
	srv := config.Server{LogLevel: s.LogLevel, ShutdownTimeout: 10 * time.Second, PprofEnabled: true}
	base := config.NATS{URL: s.NATSURL, Replicas: 1, DuplicateWindow: 2 * time.Minute}
	pg := config.Postgres{URL: s.PostgresURL, MaxConns: 10}
	ch := config.ClickHouse{Addr: s.ClickHouseAddr, Database: "parley", User: "default",
		QueryUser: localinfra.ClickHouseQueryUser, QueryPassword: localinfra.ClickHouseQueryPassword}
	nc := localinfra.NATSServiceConfig(base, r.Service)
	// common sets what every service gets from the stack; member names an
	// extra consumer replica.
	common := func(c *service.Config) {
		c.Server, c.Postgres, c.Telemetry, c.NATS = srv, pg, tel, nc
		c.GRPCAddr, c.AdminAddr = r.grpcAddr(), r.adminAddr()
	}
	member := func(m *string) {
		if r.Index > 0 {
			*m = r.Name()
		}
	}
	switch r.Service {
	case "ingest":
		cfg, err := service.Load[ingest.Config]("ingest")
		if err != nil {
			return err
		}
		common(&cfg.Config)
		cfg.HTTPAddr = r.httpAddr()
		if len(cfg.CORSOrigins) == 0 {
			cfg.CORSOrigins = []string{"*"} // local widget experiments
		}
		if !s.SyncAlways && os.Getenv("PARLEY_INGEST_COMMIT_MODE") == "" {
			cfg.CommitMode = "pipelined" // the lazy server's fastest mode
		}
		if cfg.TokenSecret, err = s.tokenSecret(); err != nil {
			return err
		}
		if cfg.PIISecret, err = s.piiSecret(); err != nil {
			return err
		}
		return ingest.Run(ctx, cfg)
	case "lifecycle":
		cfg, err := service.Load[lifecycle.Config]("lifecycle")
		if err != nil {
			return err
		}
		common(&cfg.Config)
		member(&cfg.Member)
		return lifecycle.Run(ctx, cfg)
	case "tagging":
		cfg, err := service.Load[tagging.Config]("tagging")
		if err != nil {
			return err
		}
		common(&cfg.Config)
		member(&cfg.Member)
		cfg.HTTPAddr = r.httpAddr()
		return tagging.Run(ctx, cfg)
	case "reporting":
		cfg, err := service.Load[reporting.Config]("reporting")
		if err != nil {
			return err
		}
		common(&cfg.Config)
		member(&cfg.Member)
		cfg.ClickHouse, cfg.HTTPAddr, cfg.ShareBaseURL = ch, r.httpAddr(), s.ReportingHTTPURL()
		if os.Getenv("PARLEY_EXPORT_DIR") == "" {
			cfg.Export.Dir = s.ExportDir
		}
		return reporting.Run(ctx, cfg)
	default:
		cfg, err := service.Load[notification.Config]("notification")
		if err != nil {
			return err
		}
		common(&cfg.Config)
		member(&cfg.Member)
		cfg.HTTPAddr = r.httpAddr()
		// Demos deliver webhooks to receivers on this machine.
		cfg.AllowPrivateTargets, cfg.AllowHTTP = true, true
		// Mail goes to the catcher unless the caller names a server.
		if os.Getenv("PARLEY_SMTP_HOST") == "" && s.SMTPAddr != "" {
			host, port, _ := net.SplitHostPort(s.SMTPAddr)
			cfg.SMTP.Host, cfg.SMTP.TLS = host, "none"
			cfg.SMTP.Port, _ = strconv.Atoi(port)
		}
		return notification.Run(ctx, cfg)
	}
}

func (s *Stack) waitReady(ctx context.Context, replicas []Replica, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, r := range replicas {
		name := r.Name()
		url := "http://" + r.adminAddr() + "/readyz"
		for {
			select {
			case err := <-s.errc:
				return err
			default:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("stack: %s not ready after %s", name, timeout)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// Errors reports services that stopped with an error while running.
func (s *Stack) Errors() <-chan error { return s.errc }

// Stop stops the services (graceful drain), then the mail catcher,
// ClickHouse, PostgreSQL and NATS. It is safe to call more than once.
func (s *Stack) Stop() {
	s.stopped.Do(func() {
		if len(s.procs) > 0 {
			s.stopProcesses(30 * time.Second)
		}
		if s.cancel != nil {
			s.cancel()
			s.wg.Wait()
		}
		if s.mail != nil {
			_ = s.mail.Close()
		}
		if s.ch != nil {
			_ = s.ch.Stop(30 * time.Second)
		}
		if s.pg != nil {
			_ = s.pg.Stop(30 * time.Second)
		}
		if s.nats != nil {
			s.nats.Shutdown()
			s.nats.WaitForShutdown()
		}
	})
}

// ensureDemo creates the demo tenant and its keys (see EnsureDemoKeys),
// reusing the ones saved in Dir from an earlier run.
func (s *Stack) ensureDemo(ctx context.Context) error {
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: s.PostgresURL, MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	keys, err := EnsureDemoKeys(ctx, pool, s.DemoTenant, s.Dir, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	s.DemoKey, s.OperatorKey, s.WidgetKey = keys.Demo, keys.Operator, keys.Widget
	return nil
}

// DemoKeys are the local stack's keys.
type DemoKeys struct {
	// Demo is a server key of the demo tenant with every tenant scope
	// (dir/demo-api-key).
	Demo string
	// Operator is a platform key with the operator scope
	// (dir/operator-api-key).
	Operator string
	// Widget is a publishable key of the demo tenant for WidgetOrigin
	// (dir/widget-api-key).
	Widget string
}

// WidgetOrigin is the browser origin the demo widget key works from (a
// local dev server's).
const WidgetOrigin = "http://localhost:5173"

// EnsureDemoKeys creates tenant (if missing) and its keys, reusing each key
// stored in dir when it still authenticates as what it should be.
func EnsureDemoKeys(ctx context.Context, pool *pgxpool.Pool, tenant, dir string, log *slog.Logger) (DemoKeys, error) {
	if err := tenancy.Migrate(ctx, pool, log); err != nil {
		return DemoKeys{}, err
	}
	store := tenancy.NewStore(pool)
	if err := store.CreateTenant(ctx, tenant, "Demo tenant"); err != nil && !errors.Is(err, tenancy.ErrExists) {
		return DemoKeys{}, err
	}
	var keys DemoKeys
	var err error
	if keys.Demo, err = ensureKey(ctx, store, filepath.Join(dir, "demo-api-key"), tenancy.KeySpec{
		TenantID: tenant, Name: "demo (make run)", Kind: grpcx.KindServer, Scopes: []string{grpcx.ScopeIngest, grpcx.ScopeRead, grpcx.ScopeRules, grpcx.ScopeAdmin},
	}); err != nil {
		return DemoKeys{}, err
	}
	if keys.Operator, err = ensureKey(ctx, store, filepath.Join(dir, "operator-api-key"), tenancy.KeySpec{
		Name: "operator (make run)", Kind: grpcx.KindServer, Scopes: []string{grpcx.ScopeOperator},
	}); err != nil {
		return DemoKeys{}, err
	}
	if keys.Widget, err = ensureKey(ctx, store, filepath.Join(dir, "widget-api-key"), tenancy.KeySpec{
		TenantID: tenant, Name: "widget (make run)", Kind: grpcx.KindPublishable, Scopes: []string{grpcx.ScopeIngest},
		AllowedOrigins: []string{WidgetOrigin},
	}); err != nil {
		return DemoKeys{}, err
	}
	return keys, nil
}

// ensureKey returns the key in keyFile if it authenticates with spec's
// tenant, kind and scopes, else creates one and saves it there.
func ensureKey(ctx context.Context, store *tenancy.Store, keyFile string, spec tenancy.KeySpec) (string, error) {
	if b, err := os.ReadFile(keyFile); err == nil {
		key := strings.TrimSpace(string(b))
		if p, err := store.Authenticate(ctx, key); err == nil && p.TenantID == spec.TenantID &&
			p.Kind == spec.Kind && slices.Equal(p.Scopes, spec.Scopes) {
			return key, nil
		}
	}
	key, _, err := store.CreateKey(ctx, spec)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		return "", err
	}
	return key, nil
}
