package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// projections is the "projections" command group: operations on reporting's
// ClickHouse projections through the reporting service's gRPC API.
func (a *app) projections() *cobra.Command {
	var addr, apiKey string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "Reporting's ClickHouse projections: rebuild from the event log",
	}
	def := os.Getenv("PARLEY_REPORTING_ADDR")
	if def == "" {
		def = "localhost:7104"
	}
	cmd.PersistentFlags().StringVar(&addr, "addr", def, "reporting gRPC address (env PARLEY_REPORTING_ADDR)")
	cmd.PersistentFlags().StringVar(&apiKey, "api-key", os.Getenv("PARLEY_OPERATOR_API_KEY"),
		"platform API key with the operator scope (env PARLEY_OPERATOR_API_KEY; default: the one `make run` writes to .parley/operator-api-key)")
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 24*time.Hour, "bound on the rebuild")
	rebuild := &cobra.Command{
		Use:   "rebuild",
		Short: "Replay the whole event log into fresh tables and swap them in (readers keep the old tables until the swap)",
		Long: "Rebuilds every projection (events, messages, conversations) of every tenant, so it needs a platform key with the operator scope\n" +
			"(tenant keys, admin keys included, are refused).\n" +
			"Prints progress and the replay rate every second. Ingest and queries continue meanwhile; the live projector pauses only for the final catch-up and swap.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if apiKey == "" {
				apiKey = stackOperatorKey()
			}
			if apiKey == "" {
				return errors.New("no API key: pass --api-key or set PARLEY_OPERATOR_API_KEY to a platform key with the operator scope (`make run` writes one to .parley/operator-api-key)")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
			out := cmd.OutOrStdout()
			var last *reportingv1.RebuildProgress
			// Only the replica running the live projector rebuilds; the
			// others answer "standing by". Each attempt opens a new
			// connection, which a Kubernetes Service may send elsewhere.
			for attempt := 1; ; attempt++ {
				var err error
				last, err = rebuildOnce(ctx, addr, out)
				if err == nil {
					break
				}
				if !standingBy(err) || attempt == 30 || last != nil {
					return rpcError(addr, err)
				}
				if attempt == 1 {
					fmt.Fprintln(cmd.ErrOrStderr(), "this reporting replica is standing by; retrying to reach the one that runs the live projector ...")
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(500 * time.Millisecond):
				}
			}
			if last == nil || last.Phase != "done" {
				return errors.New("rebuild ended without finishing")
			}
			fmt.Fprintf(out, "Rebuilt from %d events in %.1fs (%.0f events/s); the new tables are live.\n", last.Events, last.ElapsedSeconds, last.EventsPerSecond)
			return nil
		},
	}
	cmd.AddCommand(rebuild)
	return cmd
}

// rebuildOnce runs a rebuild on a new connection, printing progress; it
// returns the last progress seen (nil when none).
func rebuildOnce(ctx context.Context, addr string, out io.Writer) (*reportingv1.RebuildProgress, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := reportingv1.NewReportingServiceClient(conn).RebuildProjections(ctx, &reportingv1.RebuildProjectionsRequest{})
	if err != nil {
		return nil, err
	}
	var last *reportingv1.RebuildProgress
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return last, nil
		}
		if err != nil {
			return last, err
		}
		last = p
		fmt.Fprintf(out, "%-12s %12d events  sequence %d/%d  %9.0f events/s  %6.1fs\n",
			p.Phase, p.Events, p.Sequence, p.TargetSequence, p.EventsPerSecond, p.ElapsedSeconds)
	}
}

// standingBy reports whether err is reporting's answer from a replica that
// does not run the live projector.
func standingBy(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Reason == "PROJECTOR_STANDBY" {
			return true
		}
	}
	return false
}

// stackOperatorKey is the operator key the local stack wrote
// ($PARLEY_STACK_DIR/operator-api-key, default .parley), or "".
func stackOperatorKey() string {
	dir := os.Getenv("PARLEY_STACK_DIR")
	if dir == "" {
		dir = ".parley"
	}
	b, err := os.ReadFile(filepath.Join(dir, "operator-api-key"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func rpcError(addr string, err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.PermissionDenied {
		return fmt.Errorf("reporting at %s: %s: %s\nrebuilding needs a platform key with the operator scope: pass --api-key or set PARLEY_OPERATOR_API_KEY (`make run` writes one to .parley/operator-api-key)", addr, st.Code(), st.Message())
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("reporting at %s: %s: %s", addr, st.Code(), st.Message())
	}
	return err
}
