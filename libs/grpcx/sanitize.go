package grpcx

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sanitize is the last line between a handler and the client: an Internal,
// Unknown, DataLoss or Unavailable error not built by this package's safe
// constructors (status.go) may carry database or driver text, so it is
// logged in full and the client gets a generic message with a reference
// (the trace id) that finds the log line. Other errors pass unchanged.
func (a *authorizer) sanitize(ctx context.Context, method string, err error) error {
	if err == nil || IsSafe(err) {
		return err
	}
	code := status.Code(err)
	var msg string
	switch code {
	case codes.Unavailable:
		msg = "temporarily unavailable; retry later"
	case codes.Internal, codes.Unknown, codes.DataLoss:
		msg = "internal error"
	default:
		return err
	}
	ref := reference(ctx)
	a.log.ErrorContext(ctx, "error hidden from the client", "method", method, "code", code.String(), "err", err, "reference", ref)
	return status.Errorf(code, "%s (reference %s)", msg, ref)
}

// reference is the call's trace id, or a random id when there is none.
func reference(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.TraceID().IsValid() {
		return sc.TraceID().String()
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
