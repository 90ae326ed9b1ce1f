package grpcx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness check, e.g. "nats" or "postgres".
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Admin is the admin HTTP server: /healthz (the process is alive), /readyz
// (every dependency answers), /metrics (Prometheus) and, when enabled,
// /debug/pprof.
type Admin struct {
	mux    *http.ServeMux
	checks []Check
	log    *slog.Logger
	http   config.HTTP
}

// AdminOptions configure the admin server.
type AdminOptions struct {
	// Pprof serves Go profiles on /debug/pprof (PARLEY_PPROF_ENABLED).
	Pprof bool
	// HTTP bounds the server's timeouts and header size.
	HTTP config.HTTP
}

// NewAdmin builds the admin server over a Prometheus registry.
func NewAdmin(reg *prometheus.Registry, log *slog.Logger, opts AdminOptions, checks ...Check) *Admin {
	a := &Admin{mux: http.NewServeMux(), checks: checks, log: log, http: opts.HTTP}
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	a.mux.HandleFunc("GET /readyz", a.ready)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if opts.Pprof {
		// Go profiles for on-call engineers; off unless enabled, since a
		// profile exposes memory contents and costs CPU.
		a.mux.HandleFunc("/debug/pprof/", pprof.Index)
		a.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		a.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		a.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		a.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return a
}

// Handle adds a handler to the admin mux (e.g. debug endpoints).
func (a *Admin) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

func (a *Admin) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	result := map[string]string{}
	ok := true
	for _, c := range a.checks {
		if err := c.Check(ctx); err != nil {
			ok = false
			result[c.Name] = err.Error()
			continue
		}
		result[c.Name] = "ok"
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": ok, "checks": result})
}

// Serve listens on addr until ctx is cancelled.
func (a *Admin) Serve(ctx context.Context, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("grpcx: admin listen %s: %w", addr, err)
	}
	srv := a.http.NewServer(a.mux)
	// Profiles stream for as long as asked (?seconds=30): the write
	// timeout must not cut them off.
	srv.WriteTimeout = max(srv.WriteTimeout, 5*time.Minute)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	a.log.Info("admin server listening", "addr", lis.Addr().String())
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// ServeHTTP serves the admin endpoints (for embedding in another server).
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }
