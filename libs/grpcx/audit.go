package grpcx

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc/status"
)

// AuditRecord is one audited call: who, what, how it ended, when, from where.
type AuditRecord struct {
	At time.Time
	// TenantID and KeyID are empty when the call did not authenticate
	// (TenantID also for a platform key).
	TenantID string
	KeyID    string
	// Method is the full gRPC method name.
	Method string
	// Code is the gRPC status code name the call ended with ("OK",
	// "PermissionDenied", ...).
	Code string
	// Peer is the caller's address (PeerAddress).
	Peer string
}

// AuditSink receives audit records. Record is called on the request path
// and must not block for long (queue the record, write it later).
type AuditSink interface {
	Record(AuditRecord)
}

// Audited reports whether calls of method are audited: mutating methods are,
// queries are not. overrides (by full method name) wins; otherwise a method
// whose scope (in scopes) is read is a query, and every other method,
// including one that declares no scope, mutates. Health and reflection are
// never audited.
func Audited(method string, scopes map[string]string, overrides map[string]bool) bool {
	if publicMethod(method) {
		return false
	}
	if v, ok := overrides[method]; ok {
		return v
	}
	scope, ok := scopes[method]
	if !ok {
		return true
	}
	return strings.TrimPrefix(scope, optionalPrefix) != ScopeRead
}

// audit records a call of an audited method through the sink.
func (a *authorizer) audit(ctx context.Context, method string, p Principal, err error) {
	if a.auditSink == nil || !Audited(method, a.scopes, a.mutating) {
		return
	}
	a.auditSink.Record(AuditRecord{
		At: time.Now(), TenantID: p.TenantID, KeyID: p.KeyID, Method: method,
		Code: status.Code(err).String(), Peer: PeerAddress(ctx),
	})
}
