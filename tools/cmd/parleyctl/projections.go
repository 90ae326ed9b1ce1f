package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
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
	cmd.PersistentFlags().StringVar(&apiKey, "api-key", os.Getenv("PARLEY_API_KEY"), "API key with the admin scope (env PARLEY_API_KEY)")
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 24*time.Hour, "bound on the rebuild")
	rebuild := &cobra.Command{
		Use:   "rebuild",
		Short: "Replay the whole event log into fresh tables and swap them in (readers keep the old tables until the swap)",
		Long: "Rebuilds every projection (events, messages, conversations) of every tenant, so it needs an API key with the admin scope.\n" +
			"Prints progress and the replay rate every second. Ingest and queries continue meanwhile; the live projector pauses only for the final catch-up and swap.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if apiKey == "" {
				return errors.New("no API key: pass --api-key or set PARLEY_API_KEY (`make run` writes one to .parley/demo-api-key)")
			}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
			stream, err := reportingv1.NewReportingServiceClient(conn).RebuildProjections(ctx, &reportingv1.RebuildProjectionsRequest{})
			if err != nil {
				return rpcError(addr, err)
			}
			out := cmd.OutOrStdout()
			var last *reportingv1.RebuildProgress
			for {
				p, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return rpcError(addr, err)
				}
				last = p
				fmt.Fprintf(out, "%-12s %12d events  sequence %d/%d  %9.0f events/s  %6.1fs\n",
					p.Phase, p.Events, p.Sequence, p.TargetSequence, p.EventsPerSecond, p.ElapsedSeconds)
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

func rpcError(addr string, err error) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("reporting at %s: %s: %s", addr, st.Code(), st.Message())
	}
	return err
}
