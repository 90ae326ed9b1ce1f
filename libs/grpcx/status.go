package grpcx

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// This file is Parley's one gRPC status vocabulary. Every service builds its
// client-facing errors here, so the wording, the details attached and the
// promise that no raw dependency text reaches a client live in one place.

// SafeError is a status whose message was written for the client: it holds
// no raw database, driver or dependency text. The server's last interceptor
// passes it through unchanged; other Internal, Unknown, DataLoss and
// Unavailable errors have their message replaced by a generic one.
type SafeError struct{ st *status.Status }

// Error implements error.
func (e *SafeError) Error() string { return e.st.Err().Error() }

// GRPCStatus lets grpc-go and status.FromError see the status.
func (e *SafeError) GRPCStatus() *status.Status { return e.st }

func safe(st *status.Status) error { return &SafeError{st: st} }

// IsSafe reports whether err was built by this vocabulary.
func IsSafe(err error) bool {
	var s *SafeError
	return errors.As(err, &s)
}

// Invalid is InvalidArgument naming the offending field (errdetails.BadRequest).
func Invalid(field, description string) error {
	st := status.New(codes.InvalidArgument, field+": "+description)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: description}}}); err == nil {
		st = d
	}
	return safe(st)
}

// Unavailable is a dependency outage: msg says what is unavailable and what
// the client may do; it must not contain the dependency's own error text.
func Unavailable(msg string) error { return safe(status.New(codes.Unavailable, msg)) }

// Unavailablef is Unavailable with a format; the arguments must be the
// server's own words and numbers, never a dependency's error.
func Unavailablef(format string, args ...any) error {
	return Unavailable(fmt.Sprintf(format, args...))
}

// Internal is a failure of the server's own making, with a client-safe message.
func Internal(msg string) error { return safe(status.New(codes.Internal, msg)) }

// NotFound says what was not found.
func NotFound(format string, args ...any) error {
	return safe(status.New(codes.NotFound, fmt.Sprintf(format, args...)))
}

// FailedPrecondition is a request that cannot be carried out in the current
// state; typ is the PreconditionFailure type (e.g. "CONVERSATION_ENDED").
func FailedPrecondition(typ, subject, msg string) error {
	st := status.New(codes.FailedPrecondition, msg)
	if d, err := st.WithDetails(&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
		Type: typ, Subject: subject, Description: msg,
	}}}); err == nil {
		st = d
	}
	return safe(st)
}

// ResourceExhausted is a limit reached; retryAfter (when > 0) tells the
// client when to try again (errdetails.RetryInfo).
func ResourceExhausted(msg string, retryAfter time.Duration) error {
	st := status.New(codes.ResourceExhausted, msg)
	if retryAfter > 0 {
		if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)}); err == nil {
			st = d
		}
	}
	return safe(st)
}

// UnavailableReason is Unavailable with an errdetails.ErrorInfo naming the
// reason (e.g. "PROJECTOR_STANDBY") and domain, for clients that retry
// differently by reason.
func UnavailableReason(reason, domain, msg string) error {
	st := status.New(codes.Unavailable, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: domain}); err == nil {
		st = d
	}
	return safe(st)
}
