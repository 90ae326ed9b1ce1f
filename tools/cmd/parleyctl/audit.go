package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/spf13/cobra"
)

func (a *app) audit() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read the audit log of mutating calls"}
	var (
		tenant, since string
		limit         int
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit records, newest first",
		Example: `  parleyctl audit list --tenant acme --since 24h
  parleyctl audit list --since 2026-01-02T15:04:05Z --limit 1000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			return a.withStore(cmd.Context(), func(s *tenancy.Store) error {
				rows, err := s.ListAudit(cmd.Context(), tenancy.AuditFilter{TenantID: tenant, Since: from, Limit: limit})
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "AT\tTENANT\tKEY ID\tMETHOD\tCODE\tPEER")
				for _, r := range rows {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.At.UTC().Format(time.RFC3339Nano), orDash(r.TenantID),
						orDash(r.KeyID), r.Method, r.Code, orDash(r.Peer))
				}
				return w.Flush()
			})
		},
	}
	list.Flags().StringVar(&tenant, "tenant", "", "only this tenant's records")
	list.Flags().StringVar(&since, "since", "24h", "a duration back from now (90m, 168h) or an RFC 3339 time")
	list.Flags().IntVar(&limit, "limit", 100, "most records shown")
	cmd.AddCommand(list)
	return cmd
}

// parseSince reads a duration back from now or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration (24h) or an RFC 3339 time (2026-01-02T15:04:05Z)", s)
}
