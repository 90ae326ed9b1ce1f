package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	lifecyclev1 "github.com/parley-dev/parley/proto/parley/lifecycle/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// sessionsClient is how the sessions commands reach the lifecycle service.
type sessionsClient struct {
	addr    string
	apiKey  string
	timeout time.Duration
	json    bool
}

// sessions is the "sessions" command group: conversation lifecycle
// operations through the lifecycle service's gRPC API (ending goes through
// lifecycle, so that every end is an event on the log).
func (a *app) sessions() *cobra.Command {
	c := &sessionsClient{}
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "Conversation lifecycle: end stale conversations, statistics, state, session timeouts",
		Long: "Talks to the lifecycle service's gRPC API with an API key of one tenant; every command acts on that tenant only.\n" +
			"Reading needs the read scope, changing the admin scope. `make run` writes a demo key to .parley/demo-api-key.",
	}
	def := os.Getenv("PARLEY_LIFECYCLE_ADDR")
	if def == "" {
		def = "localhost:7102"
	}
	cmd.PersistentFlags().StringVar(&c.addr, "addr", def, "lifecycle gRPC address (env PARLEY_LIFECYCLE_ADDR)")
	cmd.PersistentFlags().StringVar(&c.apiKey, "api-key", os.Getenv("PARLEY_API_KEY"), "API key (env PARLEY_API_KEY)")
	cmd.PersistentFlags().DurationVar(&c.timeout, "timeout", 5*time.Minute, "bound on the call")
	cmd.PersistentFlags().BoolVar(&c.json, "json", false, "print the API's answer as JSON")

	var hours uint32
	endStale := &cobra.Command{
		Use:   "end-stale --hours N",
		Short: "End the tenant's conversations idle for longer than N hours (reason stale_timeout)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if hours == 0 {
				return errors.New("--hours must be at least 1")
			}
			return c.call(cmd, func(ctx context.Context, lc lifecyclev1.LifecycleServiceClient) error {
				res, err := lc.EndStale(ctx, &lifecyclev1.EndStaleRequest{IdleHours: hours})
				if err != nil {
					return err
				}
				if c.json {
					return c.print(cmd, res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d conversations ended (idle for more than %d hours)\n", res.GetEnded(), hours)
				return nil
			})
		},
	}
	endStale.Flags().Uint32Var(&hours, "hours", 0, "idle hours (required)")
	_ = endStale.MarkFlagRequired("hours")

	stats := &cobra.Command{
		Use:   "stats",
		Short: "Active and ended conversations, by end reason and by channel, and the oldest active one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd, func(ctx context.Context, lc lifecyclev1.LifecycleServiceClient) error {
				st, err := lc.GetStats(ctx, &lifecyclev1.GetStatsRequest{})
				if err != nil {
					return err
				}
				if c.json {
					return c.print(cmd, st)
				}
				printStats(cmd, st)
				return nil
			})
		},
	}

	show := &cobra.Command{
		Use:   "show CONVERSATION_ID",
		Short: "Show one conversation's lifecycle state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, lc lifecyclev1.LifecycleServiceClient) error {
				st, err := lc.GetConversationState(ctx, &lifecyclev1.GetConversationStateRequest{ConversationId: args[0]})
				if err != nil {
					return err
				}
				return c.print(cmd, st)
			})
		},
	}

	var note, endedBy string
	end := &cobra.Command{
		Use:   "end CONVERSATION_ID",
		Short: "End one conversation as an administrator",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, lc lifecyclev1.LifecycleServiceClient) error {
				st, err := lc.EndConversation(ctx, &lifecyclev1.EndConversationRequest{ConversationId: args[0], Note: note, EndedBy: endedBy})
				if err != nil {
					return err
				}
				return c.print(cmd, st)
			})
		},
	}
	end.Flags().StringVar(&note, "note", "", "why (logged)")
	end.Flags().StringVar(&endedBy, "by", "", "deprecated and ignored: lifecycle records the API key's id as ended_by")

	cmd.AddCommand(endStale, stats, show, end, c.timeouts())
	return cmd
}

func (c *sessionsClient) timeouts() *cobra.Command {
	cmd := &cobra.Command{Use: "timeouts", Short: "Session timeouts: how long a conversation may stay idle before it ends"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's session timeouts and the service defaults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd, func(ctx context.Context, lc lifecyclev1.LifecycleServiceClient) error {
				res, err := lc.ListSessionTimeouts(ctx, &lifecyclev1.ListSessionTimeoutsRequest{})
				if err != nil {
					return err
				}
				if c.json {
					return c.print(cmd, res)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "SCOPE\tCHANNEL\tTIMEOUT\n")
				for _, t := range res.GetTimeouts() {
					fmt.Fprintf(tw, "tenant\t%s\t%s\n", channelName(t.GetChannel()), seconds(t.GetTimeoutSeconds()))
				}
				for _, t := range res.GetChannelDefaults() {
					fmt.Fprintf(tw, "service\t%s\t%s\n", channelName(t.GetChannel()), seconds(t.GetTimeoutSeconds()))
				}
				fmt.Fprintf(tw, "service\tall\t%s\n", seconds(res.GetDefaultTimeoutSeconds()))
				return tw.Flush()
			})
		},
	}
	var channel string
	var timeout time.Duration
	set := &cobra.Command{
		Use:   "set --channel CHANNEL --timeout DURATION",
		Short: "Set the tenant's session timeout for a channel (or all: --channel all); --timeout 0 removes it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ch, err := parseChannel(channel)
			if err != nil {
				return err
			}
			if timeout < 0 || (timeout > 0 && timeout < time.Second) {
				return errors.New("--timeout must be 0 (remove) or at least 1s")
			}
			return c.call(cmd, func(ctx context.Context, lc lifecyclev1.LifecycleServiceClient) error {
				res, err := lc.SetSessionTimeout(ctx, &lifecyclev1.SetSessionTimeoutRequest{Channel: ch, TimeoutSeconds: uint32(timeout / time.Second)})
				if err != nil {
					return err
				}
				if c.json {
					return c.print(cmd, res)
				}
				if res.GetTimeoutSeconds() == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "session timeout for %s removed\n", channelName(ch))
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "session timeout for %s set to %s\n", channelName(ch), seconds(res.GetTimeoutSeconds()))
				}
				return nil
			})
		},
	}
	set.Flags().StringVar(&channel, "channel", "all", "channel (web_widget, whatsapp, ...) or all")
	set.Flags().DurationVar(&timeout, "timeout", 0, "idle time before a conversation ends, e.g. 24h; 0 removes the setting")
	_ = set.MarkFlagRequired("timeout")
	cmd.AddCommand(list, set)
	return cmd
}

// call dials lifecycle and runs f with the API key attached.
func (c *sessionsClient) call(cmd *cobra.Command, f func(context.Context, lifecyclev1.LifecycleServiceClient) error) error {
	if c.apiKey == "" {
		return errors.New("no API key: pass --api-key or set PARLEY_API_KEY (`make run` writes one to .parley/demo-api-key)")
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.apiKey)
	if err := f(ctx, lifecyclev1.NewLifecycleServiceClient(conn)); err != nil {
		if st, ok := status.FromError(err); ok {
			return fmt.Errorf("lifecycle at %s: %s: %s", c.addr, st.Code(), st.Message())
		}
		return err
	}
	return nil
}

func (c *sessionsClient) print(cmd *cobra.Command, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), string(b))
	return nil
}

func printStats(cmd *cobra.Command, st *lifecyclev1.Stats) {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "active\t%d\n", st.GetActive())
	fmt.Fprintf(tw, "ended\t%d\n", st.GetEnded())
	fmt.Fprintf(tw, "waiting for an agent\t%d\n", st.GetWaitingForAgent())
	fmt.Fprintf(tw, "oldest active (started)\t%s\n", when(st.GetOldestActiveAt()))
	fmt.Fprintf(tw, "longest idle (last activity)\t%s\n", when(st.GetLongestIdleSince()))
	fmt.Fprintf(tw, "ended by reason\t\n")
	for _, k := range sortedKeys(st.GetEndedByReason()) {
		fmt.Fprintf(tw, "  %s\t%d\n", strings.ToLower(strings.TrimPrefix(k, "END_REASON_")), st.GetEndedByReason()[k])
	}
	fmt.Fprintf(tw, "active by channel\t\n")
	for _, k := range sortedKeys(st.GetActiveByChannel()) {
		fmt.Fprintf(tw, "  %s\t%d\n", strings.ToLower(strings.TrimPrefix(k, "CHANNEL_")), st.GetActiveByChannel()[k])
	}
	_ = tw.Flush()
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	t := ts.AsTime()
	return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), time.Since(t).Round(time.Second))
}

func seconds(s uint32) string { return (time.Duration(s) * time.Second).String() }

func channelName(ch eventv1.Channel) string {
	if ch == eventv1.Channel_CHANNEL_UNSPECIFIED {
		return "all"
	}
	return strings.ToLower(strings.TrimPrefix(ch.String(), "CHANNEL_"))
}

func parseChannel(s string) (eventv1.Channel, error) {
	n := strings.ToUpper(strings.TrimSpace(s))
	if n == "ALL" || n == "" {
		return eventv1.Channel_CHANNEL_UNSPECIFIED, nil
	}
	if !strings.HasPrefix(n, "CHANNEL_") {
		n = "CHANNEL_" + n
	}
	v, ok := eventv1.Channel_value[n]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown channel %q (web_widget, whatsapp, facebook, skype, telegram, sms, api, test_chat, voice or all)", s)
	}
	return eventv1.Channel(v), nil
}
