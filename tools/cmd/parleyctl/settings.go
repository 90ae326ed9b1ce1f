package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// settingsClient reaches reporting's SettingsService; session timeouts go
// to lifecycle through the sessions commands' client.
type settingsClient struct {
	addr string
	lc   *sessionsClient
}

// settings is the "settings" command group: a tenant's time zone, bot
// names and session timeouts.
func (a *app) settings() *cobra.Command {
	c := &settingsClient{lc: &sessionsClient{}}
	cmd := &cobra.Command{
		Use:   "settings",
		Short: "Tenant settings: time zone, bot names, session timeouts",
		Long: "Talks to reporting's SettingsService (time zone, bot names) and lifecycle's API (session timeouts) with an API key of one tenant.\n" +
			"Reading needs the read scope, changing the admin scope.",
	}
	addr := os.Getenv("PARLEY_REPORTING_ADDR")
	if addr == "" {
		addr = "localhost:7104"
	}
	lcAddr := os.Getenv("PARLEY_LIFECYCLE_ADDR")
	if lcAddr == "" {
		lcAddr = "localhost:7102"
	}
	cmd.PersistentFlags().StringVar(&c.addr, "addr", addr, "reporting gRPC address (env PARLEY_REPORTING_ADDR)")
	cmd.PersistentFlags().StringVar(&c.lc.addr, "lifecycle-addr", lcAddr, "lifecycle gRPC address, for timeouts (env PARLEY_LIFECYCLE_ADDR)")
	cmd.PersistentFlags().StringVar(&c.lc.apiKey, "api-key", os.Getenv("PARLEY_API_KEY"), "API key (env PARLEY_API_KEY)")
	cmd.PersistentFlags().DurationVar(&c.lc.timeout, "timeout", 30*time.Second, "bound on the call")
	cmd.PersistentFlags().BoolVar(&c.lc.json, "json", false, "print the API's answer as JSON")

	show := &cobra.Command{
		Use:   "show",
		Short: "Show the tenant's time zone and bot names",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd, func(ctx context.Context, sc reportingv1.SettingsServiceClient) (*reportingv1.TenantSettings, error) {
				return sc.GetSettings(ctx, &reportingv1.GetSettingsRequest{})
			})
		},
	}
	var tz string
	set := &cobra.Command{
		Use:   "set --time-zone ZONE",
		Short: "Set the tenant's time zone (an IANA name such as Europe/Berlin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd, func(ctx context.Context, sc reportingv1.SettingsServiceClient) (*reportingv1.TenantSettings, error) {
				return sc.UpdateSettings(ctx, &reportingv1.UpdateSettingsRequest{TimeZone: proto.String(tz)})
			})
		},
	}
	set.Flags().StringVar(&tz, "time-zone", "", "IANA time zone (required)")
	_ = set.MarkFlagRequired("time-zone")

	bots := &cobra.Command{Use: "bots", Short: "The tenant's bot registry: display names by bot id"}
	var name string
	botSet := &cobra.Command{
		Use:   "set BOT_ID --name NAME",
		Short: "Add a bot to the registry or rename it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, sc reportingv1.SettingsServiceClient) (*reportingv1.TenantSettings, error) {
				return sc.UpdateSettings(ctx, &reportingv1.UpdateSettingsRequest{Bots: []*reportingv1.Bot{{BotId: args[0], Name: name}}})
			})
		},
	}
	botSet.Flags().StringVar(&name, "name", "", "display name (required)")
	_ = botSet.MarkFlagRequired("name")
	bots.AddCommand(botSet)

	// Session timeouts are lifecycle's: the same commands as
	// `parleyctl sessions timeouts`.
	cmd.AddCommand(show, set, bots, c.lc.timeouts())
	return cmd
}

// call dials reporting, runs f with the API key and prints the settings f
// returns.
func (c *settingsClient) call(cmd *cobra.Command, f func(context.Context, reportingv1.SettingsServiceClient) (*reportingv1.TenantSettings, error)) error {
	if c.lc.apiKey == "" {
		return errors.New("no API key: pass --api-key or set PARLEY_API_KEY (`make run` writes one to .parley/demo-api-key)")
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), c.lc.timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.lc.apiKey)
	st, err := f(ctx, reportingv1.NewSettingsServiceClient(conn))
	if err != nil {
		if s, ok := status.FromError(err); ok {
			return fmt.Errorf("reporting at %s: %s: %s", c.addr, s.Code(), s.Message())
		}
		return err
	}
	if c.lc.json {
		return c.lc.print(cmd, st)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "time zone\t%s\n", st.GetTimeZone())
	for _, b := range st.GetBots() {
		fmt.Fprintf(tw, "bot %s\t%s\n", b.GetBotId(), b.GetName())
	}
	return tw.Flush()
}
