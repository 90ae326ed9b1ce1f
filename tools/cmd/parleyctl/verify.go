package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/tools/loadgen"
	"github.com/parley-dev/parley/tools/verify"
	"github.com/spf13/cobra"
)

// verifyCmd is `parleyctl verify`: exactness after a loadgen run.
func (a *app) verifyCmd() *cobra.Command {
	var (
		acks   string
		nc     config.NATS
		ch     config.ClickHouse
		settle time.Duration
		stable time.Duration
		window int
	)
	envOr := func(name, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that everything a loadgen run acknowledged is stored exactly once, ended once and projected",
		Long: `verify reads the ack log of a loadgen run (loadgen --ack-log FILE) and checks, tenant by tenant:
  - the event stream PARLEY_CONV: every acknowledged event is stored exactly once, under the acknowledged
    sequence; every closed conversation has exactly one conversation_ended;
  - every projection, conversation by conversation, against verify's own fold of all the conversation's
    events in the stream (acknowledged or not, whoever produced them):
    lifecycle (lifecycle_conversations): known, ended and end reason as the stream's conversation_ended,
      visitor_messages, goals_reached, flows_completed and late_events;
    tagging (tagging_conversations, tagging_applied): facts known, their events and messages by role,
      ended and end reason; the tags in effect and the detectors' tags (issue_detected);
    reporting (ClickHouse events, messages, conversations FINAL): rows, message_count, event_count,
      status and end reason, tags;
  - the dead-letter stream PARLEY_DLQ holds nothing of these tenants (nor of no known tenant), and no
    partition group holds one of their conversations (partition_held).
Projections catch up asynchronously: their checks are repeated until they pass, until the consumers
(lifecycle, tagging, reporting-projector: partition groups, whose backlog is the events after their
partitions' positions, or durable consumers) have nothing left to process and the counts hold still, until no
count has changed for --stable, or until --settle is over. Prints a table per tenant and "OK: 0 lost, 0
duplicated, N conversations ended once", or the discrepancies with the first 20 ids of each (conversation ids;
for dead letters consumer, sequence, subject and reason); the exit status is 1 on any discrepancy.`,
		Example: "  loadgen --conversations 2000 --ack-log acks.jsonl && parleyctl verify --acks acks.jsonl",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := os.Open(acks)
			if err != nil {
				return err
			}
			list, err := loadgen.ReadAcks(f)
			f.Close()
			if err != nil {
				return err
			}
			rep, err := verify.Run(cmd.Context(), verify.Config{
				Acks: list, NATS: nc, PostgresURL: a.postgresURL, ClickHouse: ch, Settle: settle, Stable: stable, TaggingMaxMessages: window,
				Progress: func(r verify.Round) {
					if r.N%4 == 1 {
						p := r.Pending[0]
						fmt.Fprintf(cmd.ErrOrStderr(), "waiting for the projections (events to process: lifecycle %s, tagging %s, reporting %s): %d kinds of discrepancy pending, e.g. %s %s: %d\n",
							behind(r, verify.LifecycleConsumer), behind(r, verify.TaggingConsumer), behind(r, verify.ReportingConsumer), len(r.Pending), p.Tenant, p.Check, p.Count)
					}
				},
			})
			if err != nil {
				return err
			}
			rep.Write(cmd.OutOrStdout())
			if !rep.OK() {
				cmd.SilenceErrors = true // the report said it
				return errors.New("verify: discrepancies found")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&acks, "acks", "", "ack log of a loadgen run (required)")
	f.StringVar(&nc.URL, "nats-url", envOr("PARLEY_NATS_URL", "nats://127.0.0.1:4222"), "NATS URL (env PARLEY_NATS_URL)")
	f.StringVar(&nc.User, "nats-user", os.Getenv("PARLEY_NATS_USER"), "NATS user, e.g. parley-operator (env PARLEY_NATS_USER)")
	f.StringVar(&nc.Password, "nats-password", os.Getenv("PARLEY_NATS_PASSWORD"), "NATS password (env PARLEY_NATS_PASSWORD)")
	f.StringVar(&nc.CredsFile, "nats-creds", os.Getenv("PARLEY_NATS_CREDS"), "NATS .creds file, instead of a user and password (env PARLEY_NATS_CREDS)")
	f.StringVar(&nc.NKeySeedFile, "nats-nkey-seed-file", os.Getenv("PARLEY_NATS_NKEY_SEED_FILE"), "NATS nkey seed file, instead of a user and password (env PARLEY_NATS_NKEY_SEED_FILE)")
	f.StringVar(&nc.TLSCAFile, "nats-tls-ca", os.Getenv("PARLEY_NATS_TLS_CA"), "CA bundle that verifies the NATS server (env PARLEY_NATS_TLS_CA)")
	f.StringVar(&nc.TLSCertFile, "nats-tls-cert", os.Getenv("PARLEY_NATS_TLS_CERT"), "NATS client certificate (env PARLEY_NATS_TLS_CERT)")
	f.StringVar(&nc.TLSKeyFile, "nats-tls-key", os.Getenv("PARLEY_NATS_TLS_KEY"), "NATS client certificate's key (env PARLEY_NATS_TLS_KEY)")
	f.StringVar(&ch.Addr, "clickhouse-addr", envOr("PARLEY_CLICKHOUSE_ADDR", "127.0.0.1:19000"), "ClickHouse native address (env PARLEY_CLICKHOUSE_ADDR)")
	f.StringVar(&ch.Database, "clickhouse-database", envOr("PARLEY_CLICKHOUSE_DATABASE", "parley"), "ClickHouse database (env PARLEY_CLICKHOUSE_DATABASE)")
	f.StringVar(&ch.User, "clickhouse-user", envOr("PARLEY_CLICKHOUSE_USER", "default"), "ClickHouse user (env PARLEY_CLICKHOUSE_USER)")
	f.StringVar(&ch.Password, "clickhouse-password", os.Getenv("PARLEY_CLICKHOUSE_PASSWORD"), "ClickHouse password (env PARLEY_CLICKHOUSE_PASSWORD)")
	f.DurationVar(&settle, "settle", 60*time.Second, "longest wait for lifecycle, tagging and reporting to catch up")
	f.DurationVar(&stable, "stable", 30*time.Second, "stop waiting once no count has changed for this long")
	f.IntVar(&window, "tagging-max-messages", envInt("PARLEY_TAGGING_MAX_MESSAGES", verify.DefaultTaggingMaxMessages),
		"tagging's PARLEY_TAGGING_MAX_MESSAGES: a message id repeated within that many recent messages is counted once (env PARLEY_TAGGING_MAX_MESSAGES)")
	_ = cmd.MarkFlagRequired("acks")
	return cmd
}

// envInt returns the integer in environment variable name, or def when it
// is unset or not a positive integer.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func behind(r verify.Round, consumer string) string {
	n, ok := r.Behind[consumer]
	if !ok {
		return "unknown"
	}
	return fmt.Sprint(n)
}
