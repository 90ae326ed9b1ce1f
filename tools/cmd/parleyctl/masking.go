package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// masking is the "masking" command group: a tenant's PII masking rules
// through ingest's MaskingService (docs/privacy.md).
func (a *app) masking() *cobra.Command {
	c := &sessionsClient{}
	cmd := &cobra.Command{
		Use:   "masking",
		Short: "PII masking rules applied by ingest before events are stored",
		Long:  "Talks to ingest's MaskingService with an API key of one tenant with the admin scope (docs/privacy.md).",
	}
	addr := os.Getenv("PARLEY_INGEST_ADDR")
	if addr == "" {
		addr = "localhost:7101"
	}
	cmd.PersistentFlags().StringVar(&c.addr, "addr", addr, "ingest gRPC address (env PARLEY_INGEST_ADDR)")
	cmd.PersistentFlags().StringVar(&c.apiKey, "api-key", os.Getenv("PARLEY_API_KEY"), "API key (env PARLEY_API_KEY)")
	cmd.PersistentFlags().DurationVar(&c.timeout, "timeout", 30*time.Second, "bound on the call")
	cmd.PersistentFlags().BoolVar(&c.json, "json", false, "print the API's answer as JSON")

	call := func(cmd *cobra.Command, f func(context.Context, ingestv1.MaskingServiceClient) (proto.Message, error), text func(proto.Message, *tabwriter.Writer)) error {
		if c.apiKey == "" {
			return errors.New("no API key: pass --api-key or set PARLEY_API_KEY")
		}
		conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.apiKey)
		m, err := f(ctx, ingestv1.NewMaskingServiceClient(conn))
		if err != nil {
			if s, ok := status.FromError(err); ok {
				return fmt.Errorf("ingest at %s: %s: %s", c.addr, s.Code(), s.Message())
			}
			return err
		}
		if c.json {
			return c.print(cmd, m)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		text(m, tw)
		return tw.Flush()
	}
	printRules := func(m proto.Message, tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "ID\tDETECTOR\tPATTERN\tACTION")
		var rules []*ingestv1.MaskingRule
		switch r := m.(type) {
		case *ingestv1.ListMaskingRulesResponse:
			rules = r.GetRules()
		case *ingestv1.MaskingRule:
			rules = []*ingestv1.MaskingRule{r}
		}
		for _, r := range rules {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.GetId(), r.GetDetector(), r.GetPattern(), r.GetAction())
		}
	}

	list := &cobra.Command{
		Use: "list", Short: "List the tenant's masking rules", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(cmd, func(ctx context.Context, mc ingestv1.MaskingServiceClient) (proto.Message, error) {
				return mc.ListMaskingRules(ctx, &ingestv1.ListMaskingRulesRequest{})
			}, printRules)
		},
	}
	var rule ingestv1.MaskingRule
	ruleFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&rule.Detector, "detector", "", "email, phone, card, iban or custom (required)")
		c.Flags().StringVar(&rule.Pattern, "pattern", "", "RE2 pattern of a custom rule")
		c.Flags().StringVar(&rule.Action, "action", "mask", "mask, hash or drop")
		_ = c.MarkFlagRequired("detector")
	}
	put := &cobra.Command{
		Use: "put ID --detector D [--pattern RE2] [--action mask|hash|drop]", Short: "Create or replace a rule", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rule.Id = args[0]
			return call(cmd, func(ctx context.Context, mc ingestv1.MaskingServiceClient) (proto.Message, error) {
				return mc.PutMaskingRule(ctx, &ingestv1.PutMaskingRuleRequest{Rule: &rule})
			}, printRules)
		},
	}
	ruleFlags(put)
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a rule", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd, func(ctx context.Context, mc ingestv1.MaskingServiceClient) (proto.Message, error) {
				return mc.DeleteMaskingRule(ctx, &ingestv1.DeleteMaskingRuleRequest{Id: args[0]})
			}, func(_ proto.Message, tw *tabwriter.Writer) { fmt.Fprintf(tw, "deleted %s\n", args[0]) })
		},
	}
	var limit int32
	dry := &cobra.Command{
		Use:   "dry-run --detector D [--pattern RE2] [--action A] [--limit N]",
		Short: "Show what a rule would change on the tenant's recent messages (stores nothing)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rule.Id = "dry-run"
			return call(cmd, func(ctx context.Context, mc ingestv1.MaskingServiceClient) (proto.Message, error) {
				return mc.DryRunMaskingRule(ctx, &ingestv1.DryRunMaskingRuleRequest{Rule: &rule, Limit: limit})
			}, func(m proto.Message, tw *tabwriter.Writer) {
				r := m.(*ingestv1.DryRunMaskingRuleResponse)
				fmt.Fprintf(tw, "examined %d messages, %d would change\n", r.GetExamined(), len(r.GetChanges()))
				for _, ch := range r.GetChanges() {
					fmt.Fprintf(tw, "%s seq %d\n  before\t%q\n  after\t%q\n", ch.GetConversationId(), ch.GetStreamSequence(), ch.GetBefore(), ch.GetAfter())
				}
			})
		},
	}
	ruleFlags(dry)
	dry.Flags().Int32Var(&limit, "limit", 0, "how many recent messages (default 20, at most 100)")
	cmd.AddCommand(list, put, del, dry)
	return cmd
}
