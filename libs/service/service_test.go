package service_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/libs/testsvc"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// TestServicesAuditMutatingCalls: a service started by Start records its
// mutating calls (and the ones Mutating marks) in the audit log, and
// writes what is queued when it stops; queries are not recorded.
func TestServicesAuditMutatingCalls(t *testing.T) {
	ctx := context.Background()
	pgURL := testenv.Postgres(t)
	keys := testsvc.Tenants(t, pgURL, []string{grpcx.ScopeAdmin}, "acme")
	grpcAddr, adminAddr := testsvc.Addrs(t)
	scopes := map[string]string{
		"/test.Svc/Write":  grpcx.ScopeIngest,
		"/test.Svc/Query":  grpcx.ScopeRead,
		"/test.Svc/Export": grpcx.ScopeRead, // a query that services choose to audit
	}
	b, err := service.Start(ctx, service.Options{
		Name: "test", Config: service.Config{NATS: config.NATS{URL: testenv.NATS(t).URL}, Postgres: config.Postgres{URL: pgURL},
			GRPCAddr: grpcAddr, AdminAddr: adminAddr, Telemetry: testenv.Telemetry(t, "test")}, Scopes: scopes,
		Auth: &tenancy.AuthConfig{}, Audit: &tenancy.AuditConfig{},
		Mutating: map[string]bool{"/test.Svc/Export": true}, PostgresOptional: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	desc := &grpc.ServiceDesc{ServiceName: "test.Svc", HandlerType: (*any)(nil)}
	for _, name := range []string{"Write", "Query", "Export"} {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: name,
			Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := &healthpb.HealthCheckRequest{}
				if err := dec(in); err != nil {
					return nil, err
				}
				return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Svc/" + name}, func(context.Context, any) (any, error) {
					return &healthpb.HealthCheckResponse{}, nil
				})
			}})
	}
	b.GRPC.RegisterService(desc, struct{}{})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(runCtx) }()
	conn := testsvc.Dial(t, grpcAddr)
	callCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+keys["acme"])
	for _, m := range []string{"Write", "Query", "Export"} {
		if err := conn.Invoke(callCtx, "/test.Svc/"+m, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
	}
	if m, err := http.Get("http://" + adminAddr + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(m.Body)
		m.Body.Close()
		if !strings.Contains(string(body), "parley_audit_dropped_total 0") {
			t.Fatalf("/metrics lacks parley_audit_dropped_total:\n%s", body)
		}
	}
	// PostgresOptional: readiness does not depend on PostgreSQL.
	resp, err := http.Get("http://" + adminAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.Contains(string(body), "postgres") || !strings.Contains(string(body), "nats") {
		t.Fatalf("readyz %d %s, want ready without a postgres check", resp.StatusCode, body)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rows, err := tenancy.NewStore(pool).ListAudit(ctx, tenancy.AuditFilter{TenantID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Method != "/test.Svc/Export" || rows[1].Method != "/test.Svc/Write" || rows[1].Code != "OK" {
		t.Fatalf("audit rows %+v, want Write and Export", rows)
	}
}
