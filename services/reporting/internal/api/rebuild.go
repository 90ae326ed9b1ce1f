package api

import (
	"errors"

	"github.com/parley-dev/parley/libs/grpcx"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/rebuild"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// OperatorOnly is the PermissionDenied message for a rebuild asked with a
// tenant key.
const OperatorOnly = "rebuilding projections replays every tenant's events, so it needs a platform operator key " +
	"(a key of no tenant with the \"operator\" scope); tenant keys, admin keys included, cannot rebuild"

// SetRebuilder enables RebuildProjections.
func (s *Server) SetRebuilder(r *rebuild.Rebuilder) { s.rebuild = r }

// RebuildProjections replays the event log into fresh tables and swaps them
// in, streaming progress. Rebuilding is all tenants at once (a whole-table
// replay and RENAME swap; one tenant would cost the same), so only platform
// operator keys may ask; the asking key is logged and reported in progress.
func (s *Server) RebuildProjections(_ *reportingv1.RebuildProjectionsRequest, stream reportingv1.ReportingService_RebuildProjectionsServer) error {
	ctx := stream.Context()
	p, ok := grpcx.PrincipalFrom(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "missing API key")
	}
	if !p.Platform() || !p.Has(grpcx.ScopeOperator) {
		return status.Error(codes.PermissionDenied, OperatorOnly)
	}
	if s.rebuild == nil {
		return grpcx.FailedPrecondition("REBUILD_UNAVAILABLE", "projections", "rebuild is not available in this process")
	}
	log := s.d.Log.With("requested_by_key_id", p.KeyID)
	log.InfoContext(ctx, "rebuild requested")
	var sendErr error
	err := s.rebuild.Run(ctx, func(pr rebuild.Progress) {
		if sendErr != nil {
			return
		}
		sendErr = stream.Send(&reportingv1.RebuildProgress{
			Phase: pr.Phase, Events: pr.Events, Sequence: pr.Sequence, TargetSequence: pr.TargetSequence,
			EventsPerSecond: pr.EventsPerSecond(), ElapsedSeconds: pr.Elapsed.Seconds(), RequestedByKeyId: p.KeyID,
		})
	})
	switch {
	case errors.Is(err, rebuild.ErrBusy):
		return grpcx.FailedPrecondition("REBUILD_RUNNING", "projections", "another rebuild is running")
	case err != nil:
		log.ErrorContext(ctx, "rebuild failed", "err", err)
		return grpcx.Unavailable("rebuild failed (the current tables are untouched unless it failed while swapping); see reporting's log, then retry")
	}
	log.InfoContext(ctx, "rebuild finished", "send_err", sendErr)
	return sendErr
}
