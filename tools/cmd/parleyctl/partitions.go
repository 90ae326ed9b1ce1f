package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/spf13/cobra"
)

// partitions is the "partitions" command group: status of the partitioned
// consumers (libs/partition) and releasing held conversations, read from
// and written to the consumers' PostgreSQL database.
func (a *app) partitions() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "partitions",
		Short: "Partitioned consumers: members, leases, positions, held conversations",
		Long: "Reads the partition tables in the database of --postgres-url (the database of the consumer's service).\n" +
			"Consumer groups: lifecycle, tagging, reporting-projector.",
	}
	var consumer string
	status := &cobra.Command{
		Use:   "status [--consumer X]",
		Short: "Per consumer group: members (alive/expired), partitions with owner, epoch, position and lease expiry, held conversations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withPool(cmd.Context(), func(pool *pgxpool.Pool) error {
				return printStatus(cmd.Context(), cmd.OutOrStdout(), pool, consumer)
			})
		},
	}
	status.Flags().StringVar(&consumer, "consumer", "", "consumer group (default: every group)")

	var tenant, conv string
	var replay bool
	release := &cobra.Command{
		Use:   "release --consumer X --tenant T --conversation C [--replay]",
		Short: "Remove a conversation's hold: the running replicas apply its later events again (within a third of the lease TTL)",
		Long: "Removes the row of partition_held. The events dead-lettered while the conversation was held stay in PARLEY_DLQ\n" +
			"(subject parley.dlq.<consumer>): republish them in stream order after fixing the cause (see docs/operations.md).\n" +
			"With --replay the replica owning the conversation's partition re-applies its held events from the stream instead\n" +
			"(from the blocked sequence on, in order, before any later event), then removes the hold; an event that fails again\n" +
			"holds the conversation anew.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if consumer == "" || tenant == "" || conv == "" {
				return errors.New("--consumer, --tenant and --conversation are required")
			}
			return a.withPool(cmd.Context(), func(pool *pgxpool.Pool) error {
				c := partition.Conversation{TenantID: tenant, ConversationID: conv}
				release := partition.Release
				if replay {
					release = partition.RequestReplay
				}
				h, ok, err := release(cmd.Context(), pool, consumer, c)
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("consumer %s holds no conversation %s of tenant %s", consumer, conv, tenant)
				}
				if replay {
					fmt.Fprintf(cmd.OutOrStdout(), "replaying %s/%s in %s from stream sequence %d (held: %s); the hold is removed once its events are applied\n"+
						"(partitions status shows it held until then)\n", tenant, conv, consumer, h.BlockedSeq, h.Reason)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "released %s/%s in %s (held behind stream sequence %d: %s)\n"+
					"its events dead-lettered while held are in PARLEY_DLQ (parley.dlq.%s, Parley-Dlq-Subject parley.conv.v1.%s.%s.*): republish them in stream order\n",
					tenant, conv, consumer, h.BlockedSeq, h.Reason, consumer, tenant, conv)
				return nil
			})
		},
	}
	release.Flags().StringVar(&consumer, "consumer", "", "consumer group (required)")
	release.Flags().StringVar(&tenant, "tenant", "", "tenant id (required)")
	release.Flags().StringVar(&conv, "conversation", "", "conversation id (required)")
	release.Flags().BoolVar(&replay, "replay", false, "re-apply the conversation's held events from the stream, then release it")
	cmd.AddCommand(status, release)
	return cmd
}

// withPool connects to PostgreSQL and runs f.
func (a *app) withPool(ctx context.Context, f func(*pgxpool.Pool) error) error {
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: a.postgresURL, MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	return f(pool)
}

func printStatus(ctx context.Context, out io.Writer, q partition.Querier, consumer string) error {
	groups := []string{consumer}
	if consumer == "" {
		var err error
		if groups, err = partition.Groups(ctx, q); err != nil {
			return err
		}
		if len(groups) == 0 {
			fmt.Fprintln(out, "no consumer group has taken a partition lease")
			return nil
		}
	}
	for i, g := range groups {
		st, err := partition.Status(ctx, q, g)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(out)
		}
		fmt.Fprintf(out, "consumer %s\n", g)
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MEMBER\tSTATE\tEXPIRES")
		for _, m := range st.Members {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Member, alive(m.Alive), m.ExpiresAt.UTC().Format(time.RFC3339))
		}
		_ = tw.Flush()
		fmt.Fprintln(tw, "PARTITION\tOWNER\tEPOCH\tPOSITION\tLEASE\tLEASE EXPIRES")
		for _, p := range st.Partitions {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%s\n", p.Partition, p.Owner, p.Epoch, p.Position, alive(p.LeaseAlive), p.LeaseExpiresAt.UTC().Format(time.RFC3339))
		}
		_ = tw.Flush()
		fmt.Fprintf(out, "held conversations: %d\n", len(st.Held))
		if len(st.Held) > 0 {
			fmt.Fprintln(tw, "TENANT\tCONVERSATION\tPARTITION\tBLOCKED SEQ\tREASON")
			for _, h := range st.Held {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", h.TenantID, h.ConversationID, h.Partition, h.BlockedSeq, h.Reason)
			}
			_ = tw.Flush()
		}
	}
	return nil
}

func alive(ok bool) string {
	if ok {
		return "alive"
	}
	return "expired"
}
