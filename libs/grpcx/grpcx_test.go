package grpcx_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/testenv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type fakeAuth map[string]grpcx.Principal

func (f fakeAuth) Authenticate(_ context.Context, key string) (grpcx.Principal, error) {
	if key == "db-down" {
		return grpcx.Principal{}, errors.New("connection refused")
	}
	p, ok := f[key]
	if !ok {
		return grpcx.Principal{}, grpcx.ErrInvalidKey
	}
	return p, nil
}

// TestAuthInterceptor registers a hand-written service (reusing the health
// messages) with one method that declares a scope and one that does not.
func TestAuthInterceptor(t *testing.T) {
	tel := testenv.Telemetry(t, "grpcx-test")
	auth := fakeAuth{
		"reader": {TenantID: "acme", Scopes: []string{grpcx.ScopeRead}},
		"ingest": {TenantID: "acme", Scopes: []string{grpcx.ScopeIngest}},
		"admin":  {TenantID: "acme", Scopes: []string{grpcx.ScopeAdmin}},
	}
	srv, err := grpcx.NewServer(grpcx.ServerConfig{Telemetry: tel, Auth: auth, Scopes: map[string]string{"/test.Echo/Read": grpcx.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	var seen grpcx.Principal
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Read", Handler: echoHandler(&seen)},
			{MethodName: "Undeclared", Handler: echoHandler(&seen)},
		},
	}, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, lis, time.Second) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	call := func(method, key string) error {
		c := context.Background()
		if key != "" {
			c = metadata.AppendToOutgoingContext(c, "authorization", "Bearer "+key)
		}
		return conn.Invoke(c, method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	}
	cases := []struct {
		method, key string
		want        codes.Code
	}{
		{"/test.Echo/Read", "", codes.Unauthenticated},
		{"/test.Echo/Read", "unknown", codes.Unauthenticated},
		{"/test.Echo/Read", "db-down", codes.Unavailable},
		{"/test.Echo/Read", "ingest", codes.PermissionDenied},
		{"/test.Echo/Read", "reader", codes.OK},
		{"/test.Echo/Read", "admin", codes.OK},
		{"/test.Echo/Undeclared", "reader", codes.PermissionDenied}, // deny by default
		{"/test.Echo/Undeclared", "admin", codes.OK},
		{"/grpc.health.v1.Health/Check", "", codes.OK}, // public
	}
	for _, c := range cases {
		if got := status.Code(call(c.method, c.key)); got != c.want {
			t.Errorf("%s with key %q: got %s, want %s", c.method, c.key, got, c.want)
		}
	}
	if seen.TenantID != "acme" {
		t.Fatalf("handler did not see the principal: %+v", seen)
	}
}

func echoHandler(seen *grpcx.Principal) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := &healthpb.HealthCheckRequest{}
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, _ any) (any, error) {
			p, err := grpcx.RequireTenant(ctx)
			if err != nil {
				return nil, err
			}
			*seen = p
			return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
		}
		return interceptor(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Echo/" + methodOf(ctx)}, h)
	}
}

func methodOf(ctx context.Context) string {
	m, _ := grpc.Method(ctx)
	for i := len(m) - 1; i >= 0; i-- {
		if m[i] == '/' {
			return m[i+1:]
		}
	}
	return m
}

func TestAdminReadiness(t *testing.T) {
	tel := testenv.Telemetry(t, "grpcx-test")
	healthy := true
	a := grpcx.NewAdmin(tel.Registry, tel.Logger, grpcx.AdminOptions{}, grpcx.Check{Name: "dep", Check: func(context.Context) error {
		if healthy {
			return nil
		}
		return errors.New("down")
	}})
	h := httptest.NewServer(a)
	defer h.Close()
	get := func(path string) int {
		resp, err := http.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("/healthz") != 200 || get("/readyz") != 200 || get("/metrics") != 200 {
		t.Fatal("healthy admin endpoints")
	}
	healthy = false
	if get("/readyz") != http.StatusServiceUnavailable || get("/healthz") != 200 {
		t.Fatal("a failing dependency must fail readiness but not liveness")
	}
}
