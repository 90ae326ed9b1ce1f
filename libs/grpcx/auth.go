package grpcx

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Scopes an API key can hold.
const (
	// ScopeIngest appends conversation events.
	ScopeIngest = "ingest"
	// ScopeRead runs queries of the key's tenant.
	ScopeRead = "read"
	// ScopeRules creates, changes, tests and backfills tagging rules.
	ScopeRules = "rules"
	// ScopeAdmin holds every tenant scope of the key's tenant.
	ScopeAdmin = "admin"
	// ScopeOperator is for platform operations that touch more than one
	// tenant (rebuilding projections, ...). Only platform keys (keys of no
	// tenant) hold it, and admin does not imply it.
	ScopeOperator = "operator"
)

// Key kinds.
const (
	// KindServer is a secret key for servers: the full power of its scopes.
	KindServer = "server"
	// KindPublishable is a widget key that ends up in page source: it is
	// bound to allowed origins, may append only visitor-side events, and only
	// to conversations it started (checked with a per-conversation token).
	KindPublishable = "publishable"
)

// Principal is the authenticated caller: one tenant (none for a platform
// key), its key and that key's scopes.
type Principal struct {
	// TenantID is empty for a platform key.
	TenantID string
	KeyID    string
	Scopes   []string
	// Kind is KindServer or KindPublishable ("" means KindServer).
	Kind string
	// AllowedOrigins are the browser origins a publishable key may be used
	// from (scheme://host[:port]).
	AllowedOrigins []string
}

// Has reports whether the principal holds scope; admin holds every tenant
// scope, never the operator scope.
func (p Principal) Has(scope string) bool {
	if scope == ScopeOperator {
		return slices.Contains(p.Scopes, ScopeOperator)
	}
	return slices.Contains(p.Scopes, scope) || slices.Contains(p.Scopes, ScopeAdmin)
}

// Publishable reports whether the caller used a publishable (widget) key.
func (p Principal) Publishable() bool { return p.Kind == KindPublishable }

// Platform reports whether the caller used a platform key (no tenant).
func (p Principal) Platform() bool { return p.TenantID == "" }

// ErrInvalidKey is what an Authenticator returns for an unknown or revoked key.
var ErrInvalidKey = errors.New("invalid API key")

// Authenticator resolves an API key to a principal. It returns ErrInvalidKey
// for keys that do not authenticate and another error when it cannot tell
// (e.g. its database is down).
type Authenticator interface {
	Authenticate(ctx context.Context, apiKey string) (Principal, error)
}

type principalKey struct{}

// WithPrincipal stores p in ctx.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller stored by the auth interceptor.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// APIKeyFromMetadata reads the key from "authorization: Bearer <key>" or
// "x-api-key: <key>".
func APIKeyFromMetadata(md metadata.MD) string {
	for _, v := range md.Get("authorization") {
		if k, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(k)
		}
	}
	if v := md.Get("x-api-key"); len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	return ""
}

// publicMethod reports methods that need no API key: health and reflection.
const optionalPrefix = "optional:"

// Optional marks a method's scope as optional: a call with an API key needs
// the scope as usual; a call without one reaches the method without a
// principal, and the method must authorize it by other means or answer
// Unauthenticated.
func Optional(scope string) string { return optionalPrefix + scope }

func publicMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// authorizer is the server's own interceptor: it authenticates and
// authorizes each call, records audited calls, and keeps dependency error
// text from clients (sanitize).
type authorizer struct {
	auth      Authenticator
	scopes    map[string]string
	log       *slog.Logger
	auditSink AuditSink
	mutating  map[string]bool
}

func newAuthorizer(cfg ServerConfig, log *slog.Logger) *authorizer {
	return &authorizer{auth: cfg.Auth, scopes: cfg.Scopes, log: log, auditSink: cfg.Audit, mutating: cfg.Mutating}
}

// authorize returns the context for the handler and the caller (known also
// when it lacks the method's scope, for the audit log).
func (a *authorizer) authorize(ctx context.Context, fullMethod string) (context.Context, Principal, error) {
	if publicMethod(fullMethod) {
		return ctx, Principal{}, nil
	}
	scope, ok := a.scopes[fullMethod]
	if !ok {
		// Deny by default: every method must declare the scope it needs.
		scope = ScopeAdmin
	}
	md, _ := metadata.FromIncomingContext(ctx)
	key := APIKeyFromMetadata(md)
	scope, optional := strings.CutPrefix(scope, optionalPrefix)
	if key == "" && optional {
		// The method authorizes the call itself (e.g. a signed share link).
		return ctx, Principal{}, nil
	}
	if key == "" {
		return nil, Principal{}, status.Error(codes.Unauthenticated, "missing API key: send \"authorization: Bearer <key>\" or \"x-api-key: <key>\"")
	}
	p, err := a.auth.Authenticate(ctx, key)
	switch {
	case errors.Is(err, ErrInvalidKey):
		return nil, Principal{}, status.Error(codes.Unauthenticated, "invalid or revoked API key")
	case IsSafe(err):
		return nil, Principal{}, err // e.g. ResourceExhausted after too many failures
	case err != nil:
		a.log.WarnContext(ctx, "cannot verify API key", "method", fullMethod, "err", err)
		return nil, Principal{}, Unavailable("cannot verify the API key right now; retry later")
	}
	if !p.Has(scope) {
		if p.Platform() && scope != ScopeOperator {
			return nil, p, status.Errorf(codes.PermissionDenied, "%s acts on one tenant's data and needs a tenant key with the %q scope; platform keys hold only the %q scope", fullMethod, scope, ScopeOperator)
		}
		return nil, p, status.Errorf(codes.PermissionDenied, "API key lacks the %q scope required by %s", scope, fullMethod)
	}
	return WithPrincipal(ctx, p), p, nil
}

func (a *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	hctx, p, err := a.authorize(ctx, info.FullMethod)
	defer a.auditPanic(ctx, info.FullMethod, p)
	if err == nil {
		resp, err = handler(hctx, req)
	}
	a.audit(ctx, info.FullMethod, p, err)
	return resp, a.sanitize(ctx, info.FullMethod, err)
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	hctx, p, err := a.authorize(ctx, info.FullMethod)
	defer a.auditPanic(ctx, info.FullMethod, p)
	if err == nil {
		err = handler(srv, &wrappedStream{ServerStream: ss, ctx: hctx})
	}
	a.audit(ctx, info.FullMethod, p, err)
	return a.sanitize(ctx, info.FullMethod, err)
}

// auditPanic records a call whose handler panicked (as Internal, what the
// recovery interceptor answers) and lets the panic go on to it.
func (a *authorizer) auditPanic(ctx context.Context, method string, p Principal) {
	if r := recover(); r != nil {
		a.audit(ctx, method, p, status.Error(codes.Internal, "panic"))
		panic(r)
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// RequireTenant returns the caller's principal: Unauthenticated without one,
// PermissionDenied for a platform key (no tenant). Handlers use it to scope
// every read and write to the caller's tenant.
func RequireTenant(ctx context.Context) (Principal, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return Principal{}, status.Error(codes.Unauthenticated, "no authenticated tenant")
	}
	if p.Platform() {
		return Principal{}, status.Error(codes.PermissionDenied, "this method acts on one tenant's data; a platform key (no tenant) cannot call it: use a key of the tenant")
	}
	return p, nil
}

// MethodScopes maps every method of a service to the scope it needs: the
// method's entry in overrides (by short name), else def.
func MethodScopes(desc grpc.ServiceDesc, def string, overrides map[string]string) map[string]string {
	m := map[string]string{}
	add := func(name string) {
		scope := def
		if s, ok := overrides[name]; ok {
			scope = s
		}
		m["/"+desc.ServiceName+"/"+name] = scope
	}
	for _, md := range desc.Methods {
		add(md.MethodName)
	}
	for _, sd := range desc.Streams {
		add(sd.StreamName)
	}
	return m
}
