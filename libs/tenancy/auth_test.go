package tenancy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// pgProxy forwards TCP connections to PostgreSQL until Down: then it
// closes every connection and its listener, as a PostgreSQL outage does.
type pgProxy struct {
	lis    net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func startProxy(t *testing.T, target string) *pgProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{lis: lis, target: target}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(p.Down)
	return p
}

// Down stops answering: connections drop, new ones are refused.
func (p *pgProxy) Down() {
	p.lis.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// proxiedStore is a Store whose database connections go through a proxy
// the test can take down, with a clock the test moves.
func proxiedStore(t *testing.T, cfg AuthConfig) (*Store, *pgProxy, *time.Time) {
	t.Helper()
	ctx := context.Background()
	u, err := url.Parse(testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, u.Host)
	u.Host = proxy.lis.Addr().String()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: u.String(), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s := NewStoreWith(pool, Options{Auth: cfg, Now: func() time.Time { return now }})
	return s, proxy, &now
}

// serveEcho serves test.Svc with s as the authenticator: Append (ingest
// scope), List (read scope), each answering OK; audit may be nil.
func serveEcho(t *testing.T, s *Store, audit grpcx.AuditSink) *grpc.ClientConn {
	t.Helper()
	scopes := map[string]string{"/test.Svc/Append": grpcx.ScopeIngest, "/test.Svc/List": grpcx.ScopeRead}
	cfg := grpcx.ServerConfig{Telemetry: testenv.Telemetry(t, "tenancy-test"), Auth: s, Scopes: scopes}
	if audit != nil {
		cfg.Audit = audit
	}
	srv, err := grpcx.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	desc := &grpc.ServiceDesc{ServiceName: "test.Svc", HandlerType: (*any)(nil)}
	for full := range scopes {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{
			MethodName: strings.TrimPrefix(full, "/test.Svc/"),
			Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := &healthpb.HealthCheckRequest{}
				if err := dec(in); err != nil {
					return nil, err
				}
				return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: full}, func(context.Context, any) (any, error) {
					return &healthpb.HealthCheckResponse{}, nil
				})
			},
		})
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
	return conn
}

// appendAs calls Append with key; a non-empty peer is sent as the
// x-forwarded-for a loopback gateway would add.
func appendAs(conn *grpc.ClientConn, key, peer string) error {
	return callAs(conn, "Append", key, peer)
}

func callAs(conn *grpc.ClientConn, method, key, peer string) error {
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
	if peer != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", "10.9.9.9, "+peer)
	}
	return conn.Invoke(ctx, "/test.Svc/"+method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
}

func tenantKey(t *testing.T, s *Store, tenant string) string {
	t.Helper()
	ctx := context.Background()
	if ok, _ := s.TenantExists(ctx, tenant); !ok {
		if err := s.CreateTenant(ctx, tenant, ""); err != nil {
			t.Fatal(err)
		}
	}
	key, _, err := s.CreateAPIKey(ctx, tenant, "", []string{grpcx.ScopeIngest})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestAuthenticatesThroughAPostgresOutage: keys verified recently keep
// working for OutageGrace while PostgreSQL is unreachable; keys never
// verified are refused with Unavailable (cannot verify).
func TestAuthenticatesThroughAPostgresOutage(t *testing.T) {
	ctx := context.Background()
	grace := 15 * time.Minute
	s, proxy, now := proxiedStore(t, AuthConfig{OutageGrace: grace})
	known, unknown, revoked := tenantKey(t, s, "acme"), tenantKey(t, s, "acme"), tenantKey(t, s, "acme")
	conn := serveEcho(t, s, nil)
	for _, k := range []string{known, revoked} {
		if err := appendAs(conn, k, ""); err != nil {
			t.Fatalf("before the outage: %v", err)
		}
	}
	// A key revoked while the database is up stops within the cache TTL,
	// and the outage does not bring it back.
	revokedID, _, _ := ParseKey(revoked)
	if err := s.RevokeAPIKey(ctx, "acme", revokedID); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(CacheTTL + time.Second)
	if c := status.Code(appendAs(conn, revoked, "")); c != codes.Unauthenticated {
		t.Fatalf("revoked key after the cache TTL: %s, want Unauthenticated", c)
	}
	if err := appendAs(conn, known, ""); err != nil { // verified again: the grace starts now
		t.Fatal(err)
	}

	proxy.Down()
	// Well past the cache TTL, so the key must be checked again, and the
	// check fails.
	*now = now.Add(10 * time.Minute)
	if _, err := s.pool.Exec(ctx, `SELECT 1`); err == nil {
		t.Fatal("the database still answers through the proxy")
	}
	if err := appendAs(conn, known, ""); err != nil {
		t.Fatalf("recently verified key during the outage: %v", err)
	}
	if c := status.Code(appendAs(conn, revoked, "")); c == codes.OK {
		t.Fatal("revoked key works again during the outage")
	}
	st := status.Convert(appendAs(conn, unknown, ""))
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "cannot verify") {
		t.Fatalf("unverified key during the outage: %s %q, want Unavailable (cannot verify)", st.Code(), st.Message())
	}
	if strings.Contains(st.Message(), "127.0.0.1") || strings.Contains(st.Message(), "dial") {
		t.Fatalf("driver text reached the client: %q", st.Message())
	}
	// The grace is counted from the last successful check.
	*now = now.Add(grace - 10*time.Minute + time.Second)
	if st := status.Convert(appendAs(conn, known, "")); st.Code() != codes.Unavailable {
		t.Fatalf("key past the outage grace: %s %q, want Unavailable", st.Code(), st.Message())
	}
}

// TestFailedAuthenticationsAreThrottled: after FailureLimit failures a peer
// gets ResourceExhausted with a retry delay, without a database lookup;
// other peers and keys verified within the cache TTL are not affected.
func TestFailedAuthenticationsAreThrottled(t *testing.T) {
	s, proxy, now := proxiedStore(t, AuthConfig{FailureLimit: 3, FailureWindow: time.Minute})
	good, fresh := tenantKey(t, s, "acme"), tenantKey(t, s, "acme")
	conn := serveEcho(t, s, nil)
	if err := appendAs(conn, good, "203.0.113.7"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		bad := fmt.Sprintf("pk_%016x_%s", i, strings.Repeat("0", 64))
		if c := status.Code(appendAs(conn, bad, "203.0.113.7")); c != codes.Unauthenticated {
			t.Fatalf("failure %d: %s, want Unauthenticated", i+1, c)
		}
	}
	// With the database gone, any lookup would answer Unavailable: the
	// throttled answer proves none happens.
	proxy.Down()
	*now = now.Add(20 * time.Second)
	st := status.Convert(appendAs(conn, fresh, "203.0.113.7"))
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("after 3 failures: %s %q, want ResourceExhausted", st.Code(), st.Message())
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.RetryDelay.AsDuration() != 40*time.Second {
		t.Fatalf("retry info %v, want 40s (the rest of the window)", retry)
	}
	// A key verified within the cache TTL still works from that peer.
	if err := appendAs(conn, good, "203.0.113.7"); err != nil {
		t.Fatalf("cached valid key from a throttled peer: %v", err)
	}
	// Another peer is not throttled (its lookup meets the outage).
	if c := status.Code(appendAs(conn, fresh, "198.51.100.1")); c != codes.Unavailable {
		t.Fatalf("another peer: %s, want Unavailable (not throttled)", c)
	}
	// The window ends.
	*now = now.Add(41 * time.Second)
	if c := status.Code(appendAs(conn, fresh, "203.0.113.7")); c != codes.Unavailable {
		t.Fatalf("after the window: %s, want Unavailable (a lookup again)", c)
	}
}

// TestRefusedKeysCannotEvictValidOnes floods the cache with random keys:
// refused keys stay within their bound and the valid key stays cached (it
// authenticates with the database gone).
func TestRefusedKeysCannotEvictValidOnes(t *testing.T) {
	ctx := context.Background()
	s, proxy, _ := proxiedStore(t, AuthConfig{NegativeCacheSize: 50, CacheSize: 10, FailureLimit: 1 << 30})
	good := tenantKey(t, s, "acme")
	if _, err := s.Authenticate(ctx, good); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if _, err := s.Authenticate(ctx, fmt.Sprintf("pk_%016x_%064x", i, i)); !errors.Is(err, grpcx.ErrInvalidKey) {
			t.Fatalf("random key %d: %v", i, err)
		}
	}
	if valid, refused := s.auth.cache.sizes(); valid != 1 || refused != 50 {
		t.Fatalf("cache holds %d valid and %d refused keys, want 1 and 50", valid, refused)
	}
	proxy.Down()
	if _, err := s.Authenticate(ctx, good); err != nil {
		t.Fatalf("valid key after the flood: %v", err)
	}
}
