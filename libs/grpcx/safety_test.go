package grpcx_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/telemetry"
	"github.com/parley-dev/parley/libs/testenv"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// syncBuffer collects log output written from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type handlerFunc func(ctx context.Context) error

// serve starts a grpcx server whose service "test.Svc" has one method per
// handler (each answering an empty health response) and returns a client
// connection and the server's log output.
func serve(t *testing.T, cfg grpcx.ServerConfig, handlers map[string]handlerFunc) (*grpc.ClientConn, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "grpcx-test", LogLevel: "debug", LogOutput: logs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	cfg.Telemetry = tel
	srv, err := grpcx.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	desc := &grpc.ServiceDesc{ServiceName: "test.Svc", HandlerType: (*any)(nil)}
	for name, h := range handlers {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: name, Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := &healthpb.HealthCheckRequest{}
			if err := dec(in); err != nil {
				return nil, err
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Svc/" + name}, func(ctx context.Context, _ any) (any, error) {
				if err := h(ctx); err != nil {
					return nil, err
				}
				return &healthpb.HealthCheckResponse{}, nil
			})
		}})
	}
	srv.RegisterService(desc, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, lis, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, logs
}

func invoke(conn *grpc.ClientConn, method, key string) error {
	ctx := context.Background()
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	return conn.Invoke(ctx, "/test.Svc/"+method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
}

// realDriverErrors returns errors pgx really produces: a failed connection
// (a closed port) and a failed query on the machine's PostgreSQL.
func realDriverErrors(t *testing.T) (connectErr, queryErr error) {
	t.Helper()
	ctx := context.Background()
	port, err := localinfra.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	_, connectErr = pgconn.Connect(ctx, fmt.Sprintf("postgres://parley:secret@127.0.0.1:%d/parley?sslmode=disable&connect_timeout=2", port))
	var ce *pgconn.ConnectError
	if !errors.As(connectErr, &ce) {
		t.Fatalf("want a pgconn.ConnectError, got %v", connectErr)
	}
	conn, err := pgx.Connect(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, queryErr = conn.Exec(ctx, `SELECT secret_column FROM no_such_table`)
	var pe *pgconn.PgError
	if !errors.As(queryErr, &pe) {
		t.Fatalf("want a PgError, got %v", queryErr)
	}
	return connectErr, queryErr
}

// TestDriverTextNeverReachesClients: errors carrying database or driver
// text leave the server with a generic message and a reference that finds
// the full error in the log; errors built with grpcx's safe constructors
// (and codes outside Internal/Unknown/DataLoss/Unavailable) pass unchanged.
func TestDriverTextNeverReachesClients(t *testing.T) {
	connectErr, queryErr := realDriverErrors(t)
	auth := fakeAuth{"k": {TenantID: "acme", Scopes: []string{grpcx.ScopeAdmin}}}
	conn, logs := serve(t, grpcx.ServerConfig{Auth: auth}, map[string]handlerFunc{
		"UnavailableDriver": func(context.Context) error { return status.Errorf(codes.Unavailable, "x: %v", connectErr) },
		"InternalDriver":    func(context.Context) error { return status.Errorf(codes.Internal, "query: %v", queryErr) },
		"RawError":          func(context.Context) error { return queryErr },
		"DataLoss":          func(context.Context) error { return status.Error(codes.DataLoss, queryErr.Error()) },
		"SafeUnavailable": func(context.Context) error {
			return grpcx.Unavailable("the event log is unreachable; retry with the same event ids")
		},
		"SafeInternal":  func(context.Context) error { return grpcx.Internal("projection state is inconsistent") },
		"Invalid":       func(context.Context) error { return grpcx.Invalid("events[2].text", "must not be empty") },
		"NotFoundPlain": func(context.Context) error { return status.Error(codes.NotFound, "conversation c1 not found") },
		"WithDetails": func(context.Context) error {
			st, err := status.New(codes.Unavailable, "standby: "+queryErr.Error()).WithDetails(
				&errdetails.ErrorInfo{Reason: "PROJECTOR_STANDBY", Domain: "parley", Metadata: map[string]string{"err": queryErr.Error()}},
				&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)},
				&errdetails.DebugInfo{Detail: queryErr.Error()})
			if err != nil {
				return err
			}
			return st.Err()
		},
	})
	driverText := []string{connectErr.Error(), queryErr.Error(), "no_such_table", "dial", "SQLSTATE", "127.0.0.1"}
	for method, want := range map[string]codes.Code{
		"UnavailableDriver": codes.Unavailable, "InternalDriver": codes.Internal, "RawError": codes.Unknown, "DataLoss": codes.DataLoss,
		"WithDetails": codes.Unavailable,
	} {
		st := status.Convert(invoke(conn, method, "k"))
		if st.Code() != want {
			t.Errorf("%s: code %s, want %s", method, st.Code(), want)
		}
		for _, d := range driverText {
			if strings.Contains(st.Message(), d) {
				t.Errorf("%s: client message %q contains driver text %q", method, st.Message(), d)
			}
		}
		_, ref, ok := strings.Cut(st.Message(), "(reference ")
		ref = strings.TrimSuffix(ref, ")")
		if !ok || len(ref) != 32 {
			t.Errorf("%s: client message %q carries no reference", method, st.Message())
			continue
		}
		// The log line with the reference holds the original error.
		var found bool
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, ref) && (strings.Contains(line, "no_such_table") || strings.Contains(line, "dial")) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no log line with reference %s and the original error:\n%s", method, ref, logs.String())
		}
	}
	for method, want := range map[string]struct {
		code codes.Code
		msg  string
	}{
		"SafeUnavailable": {codes.Unavailable, "the event log is unreachable; retry with the same event ids"},
		"SafeInternal":    {codes.Internal, "projection state is inconsistent"},
		"Invalid":         {codes.InvalidArgument, "events[2].text: must not be empty"},
		"NotFoundPlain":   {codes.NotFound, "conversation c1 not found"},
	} {
		st := status.Convert(invoke(conn, method, "k"))
		if st.Code() != want.code || st.Message() != want.msg {
			t.Errorf("%s: got %s %q, want %s %q", method, st.Code(), st.Message(), want.code, want.msg)
		}
	}
	// Details clients act on survive, without free text; others are dropped.
	st := status.Convert(invoke(conn, "WithDetails", "k"))
	var kept []string
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			kept = append(kept, fmt.Sprintf("ErrorInfo %s %s %d", d.Reason, d.Domain, len(d.Metadata)))
		case *errdetails.RetryInfo:
			kept = append(kept, fmt.Sprintf("RetryInfo %s", d.RetryDelay.AsDuration()))
		default:
			kept = append(kept, fmt.Sprintf("%T", d))
		}
	}
	if got := strings.Join(kept, "; "); got != "ErrorInfo PROJECTOR_STANDBY parley 0; RetryInfo 3s" {
		t.Errorf("details after sanitizing: %s", got)
	}
	// The key check's own outage answer carries no driver text either.
	st = status.Convert(invoke(conn, "SafeInternal", "db-down"))
	if st.Code() != codes.Unavailable || strings.Contains(st.Message(), "connection refused") {
		t.Errorf("key check during an outage: %s %q", st.Code(), st.Message())
	}
}

// TestPlatformKeysOnTenantMethods: a platform key (no tenant, operator) is
// refused by tenant methods with a message that says why.
func TestPlatformKeysOnTenantMethods(t *testing.T) {
	auth := fakeAuth{
		"plat":  {KeyID: "p1", Scopes: []string{grpcx.ScopeOperator}},
		"admin": {TenantID: "acme", KeyID: "a1", Scopes: []string{grpcx.ScopeAdmin}},
	}
	tenantOnly := func(ctx context.Context) error { _, err := grpcx.RequireTenant(ctx); return err }
	conn, _ := serve(t, grpcx.ServerConfig{Auth: auth, Scopes: map[string]string{
		"/test.Svc/Read":    grpcx.ScopeRead,
		"/test.Svc/Rebuild": grpcx.ScopeOperator,
		"/test.Svc/Misuse":  grpcx.ScopeOperator,
	}}, map[string]handlerFunc{
		"Read":    tenantOnly,
		"Rebuild": func(context.Context) error { return nil },
		"Misuse":  tenantOnly, // an operator method that wrongly needs a tenant
	})
	cases := []struct {
		method, key string
		code        codes.Code
		msg         string
	}{
		{"Read", "plat", codes.PermissionDenied, "platform keys hold only the \"operator\" scope"},
		{"Misuse", "plat", codes.PermissionDenied, "a platform key (no tenant) cannot call it"},
		{"Rebuild", "plat", codes.OK, ""},
		{"Rebuild", "admin", codes.PermissionDenied, "lacks the \"operator\" scope"},
		{"Read", "admin", codes.OK, ""},
	}
	for _, c := range cases {
		st := status.Convert(invoke(conn, c.method, c.key))
		if st.Code() != c.code || !strings.Contains(st.Message(), c.msg) {
			t.Errorf("%s with %s: got %s %q, want %s containing %q", c.method, c.key, st.Code(), st.Message(), c.code, c.msg)
		}
	}
}
