package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/tools/loadgen"
	"github.com/parley-dev/parley/tools/verify"
	"github.com/spf13/cobra"
)

// verifyCmd is `parleyctl verify`: exactness after a loadgen run.
func (a *app) verifyCmd() *cobra.Command {
	var (
		acks, natsURL string
		ch            config.ClickHouse
		settle        time.Duration
		stable        time.Duration
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
		Long: `verify reads the ack log of a loadgen run (loadgen --ack-log FILE) and compares it, tenant by tenant, with
  - the event stream PARLEY_CONV: every acknowledged event is stored exactly once, under the acknowledged
    sequence; every closed conversation has exactly one conversation_ended;
  - lifecycle's state in PostgreSQL (lifecycle_conversations): every conversation is known, every closed one ended;
  - reporting's ClickHouse tables: events FINAL (producer ingest), messages FINAL, conversations FINAL
    (rows, sum of message_count, ended ones) match what was acknowledged.
Lifecycle and reporting catch up asynchronously: their checks are repeated until they pass, until both
durable consumers (lifecycle, reporting-projector) have nothing left to process and the counts hold still,
until no count has changed for --stable, or until --settle is over. Prints a table per tenant and "OK: 0 lost, 0 duplicated, N conversations
ended once", or the discrepancies with the first 20 ids of each; the exit status is 1 on any discrepancy.`,
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
				Acks: list, NATSURL: natsURL, PostgresURL: a.postgresURL, ClickHouse: ch, Settle: settle, Stable: stable,
				Progress: func(r verify.Round) {
					if r.N%4 == 1 {
						p := r.Pending[0]
						fmt.Fprintf(cmd.ErrOrStderr(), "waiting for lifecycle and reporting (events to process: lifecycle %s, reporting %s): %d kinds of discrepancy pending, e.g. %s %s: %d\n",
							behind(r, verify.LifecycleConsumer), behind(r, verify.ReportingConsumer), len(r.Pending), p.Tenant, p.Check, p.Count)
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
	f.StringVar(&natsURL, "nats-url", envOr("PARLEY_NATS_URL", "nats://127.0.0.1:4222"), "NATS URL (env PARLEY_NATS_URL)")
	f.StringVar(&ch.Addr, "clickhouse-addr", envOr("PARLEY_CLICKHOUSE_ADDR", "127.0.0.1:19000"), "ClickHouse native address (env PARLEY_CLICKHOUSE_ADDR)")
	f.StringVar(&ch.Database, "clickhouse-database", envOr("PARLEY_CLICKHOUSE_DATABASE", "parley"), "ClickHouse database (env PARLEY_CLICKHOUSE_DATABASE)")
	f.StringVar(&ch.User, "clickhouse-user", envOr("PARLEY_CLICKHOUSE_USER", "default"), "ClickHouse user (env PARLEY_CLICKHOUSE_USER)")
	f.StringVar(&ch.Password, "clickhouse-password", os.Getenv("PARLEY_CLICKHOUSE_PASSWORD"), "ClickHouse password (env PARLEY_CLICKHOUSE_PASSWORD)")
	f.DurationVar(&settle, "settle", 60*time.Second, "longest wait for lifecycle and reporting to catch up")
	f.DurationVar(&stable, "stable", 30*time.Second, "stop waiting once no count has changed for this long")
	_ = cmd.MarkFlagRequired("acks")
	return cmd
}

func behind(r verify.Round, consumer string) string {
	n, ok := r.Behind[consumer]
	if !ok {
		return "unknown"
	}
	return fmt.Sprint(n)
}
