package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// prices is the "prices" command group: the tenant's model price table in
// the reporting service (admin scope), which prices usage sent without a
// cost.
func (a *app) prices() *cobra.Command {
	var addr, apiKey string
	cmd := &cobra.Command{
		Use:   "prices",
		Short: "Model prices: what each model costs the tenant per million tokens (prices usage the bot sent without a cost)",
		Long:  "Talks to the reporting service's gRPC API with an API key of one tenant holding the admin scope.",
	}
	def := os.Getenv("PARLEY_REPORTING_ADDR")
	if def == "" {
		def = "localhost:7104"
	}
	cmd.PersistentFlags().StringVar(&addr, "addr", def, "reporting gRPC address (env PARLEY_REPORTING_ADDR)")
	cmd.PersistentFlags().StringVar(&apiKey, "api-key", os.Getenv("PARLEY_API_KEY"), "API key with the admin scope (env PARLEY_API_KEY)")
	call := func(cmd *cobra.Command, f func(context.Context, reportingv1.ReportingServiceClient) error) error {
		if apiKey == "" {
			return errors.New("no API key: pass --api-key or set PARLEY_API_KEY (`make run` writes one to .parley/demo-api-key)")
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
		if err := f(ctx, reportingv1.NewReportingServiceClient(conn)); err != nil {
			if st, ok := status.FromError(err); ok {
				return fmt.Errorf("reporting at %s: %s: %s", addr, st.Code(), st.Message())
			}
			return err
		}
		return nil
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's model prices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(cmd, func(ctx context.Context, rc reportingv1.ReportingServiceClient) error {
				res, err := rc.ListModelPrices(ctx, &reportingv1.ListModelPricesRequest{})
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "MODEL\tCURRENCY\tINPUT/1M\tOUTPUT/1M\tUPDATED\n")
				for _, p := range res.GetPrices() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.GetModel(), p.GetCurrency(), units(p.GetInputMicrosPerMillion()),
						units(p.GetOutputMicrosPerMillion()), p.GetUpdatedAt().AsTime().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	var model, currency, input, output string
	set := &cobra.Command{
		Use:   "set --model M --currency CUR --input PRICE --output PRICE",
		Short: "Set a model's price per million input and output tokens, in currency units (e.g. --input 0.40)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := micros(input)
			if err != nil {
				return fmt.Errorf("--input: %w", err)
			}
			out, err := micros(output)
			if err != nil {
				return fmt.Errorf("--output: %w", err)
			}
			return call(cmd, func(ctx context.Context, rc reportingv1.ReportingServiceClient) error {
				p, err := rc.SetModelPrice(ctx, &reportingv1.SetModelPriceRequest{Price: &reportingv1.ModelPrice{
					Model: model, Currency: currency, InputMicrosPerMillion: in, OutputMicrosPerMillion: out}})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s %s per million input tokens, %s per million output tokens\n",
					p.GetModel(), p.GetCurrency(), units(p.GetInputMicrosPerMillion()), units(p.GetOutputMicrosPerMillion()))
				return nil
			})
		},
	}
	set.Flags().StringVar(&model, "model", "", "model name as the bot sends it in usage (required)")
	set.Flags().StringVar(&currency, "currency", "USD", "ISO 4217 code")
	set.Flags().StringVar(&input, "input", "0", "price per million input tokens, in currency units")
	set.Flags().StringVar(&output, "output", "0", "price per million output tokens, in currency units")
	_ = set.MarkFlagRequired("model")
	cmd.AddCommand(list, set)
	return cmd
}

// micros parses a non-negative amount with at most six decimals ("0.40")
// into micros, exactly.
func micros(s string) (uint64, error) {
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" || len(frac) > 6 || strings.ContainsAny(whole+frac, "+-") {
		return 0, fmt.Errorf("%q: a non-negative amount with at most six decimals", s)
	}
	w, err := strconv.ParseUint(whole, 10, 64)
	if err != nil || w > 1<<63/1_000_000 {
		return 0, fmt.Errorf("%q: a non-negative amount with at most six decimals", s)
	}
	f := uint64(0)
	if frac != "" {
		f, err = strconv.ParseUint(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q: a non-negative amount with at most six decimals", s)
		}
	}
	return w*1_000_000 + f, nil
}

// units renders micros as currency units ("0.4").
func units(m uint64) string {
	s := fmt.Sprintf("%d.%06d", m/1_000_000, m%1_000_000)
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}
