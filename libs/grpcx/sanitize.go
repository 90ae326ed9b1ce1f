package grpcx

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// sanitize is the last line between a handler and the client: an Internal,
// Unknown, DataLoss or Unavailable error not built by this package's safe
// constructors (status.go) may carry database or driver text, so it is
// logged in full and the client gets a generic message with a reference
// (the trace id) that finds the log line; only details without free text
// are kept (machineDetails). Other errors pass unchanged.
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
	st := status.Newf(code, "%s (reference %s)", msg, ref)
	if kept := machineDetails(err); len(kept) > 0 {
		if d, derr := st.WithDetails(kept...); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// machineDetails are the details of err that hold no free text and that
// clients act on: ErrorInfo's reason and domain (its metadata is dropped)
// and RetryInfo.
func machineDetails(err error) []protoadapt.MessageV1 {
	var kept []protoadapt.MessageV1
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			kept = append(kept, &errdetails.ErrorInfo{Reason: d.Reason, Domain: d.Domain})
		case *errdetails.RetryInfo:
			kept = append(kept, d)
		}
	}
	return kept
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
