// Command parleyctl is Parley's operator CLI: tenants, bots, API keys and
// the audit log.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

type app struct {
	postgresURL string
}

func newRoot() *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:           "parleyctl",
		Short:         "Operate Parley: tenants, bots, API keys, the audit log and the local mail catcher",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	def := os.Getenv("PARLEY_POSTGRES_URL")
	if def == "" {
		def = "postgres://parley:parley@127.0.0.1:55432/parley?sslmode=disable"
	}
	root.PersistentFlags().StringVar(&a.postgresURL, "postgres-url", def, "PostgreSQL URL (env PARLEY_POSTGRES_URL)")
	root.AddCommand(a.tenants(), a.keys(), a.audit(), a.bots(), a.sessions(), a.projections(), a.prices(), a.verifyCmd(), a.partitions(), a.mail(), a.settings(), a.masking(), a.exports())
	return root
}

// withStore connects to PostgreSQL, applies the tenancy schema and runs f.
func (a *app) withStore(ctx context.Context, f func(*tenancy.Store) error) error {
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: a.postgresURL, MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := tenancy.Migrate(ctx, pool, nil); err != nil {
		return err
	}
	return f(tenancy.NewStore(pool))
}

func (a *app) tenants() *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Manage tenants"}
	var name string
	create := &cobra.Command{
		Use:   "create TENANT_ID",
		Short: "Create a tenant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd.Context(), func(s *tenancy.Store) error {
				if err := s.CreateTenant(cmd.Context(), args[0], name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "tenant %s created\n", args[0])
				return nil
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "display name")
	cmd.AddCommand(create)
	return cmd
}

func (a *app) bots() *cobra.Command {
	cmd := &cobra.Command{Use: "bots", Short: "Manage bots"}
	var tenant, name string
	create := &cobra.Command{
		Use:   "create BOT_ID",
		Short: "Register a bot with a tenant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd.Context(), func(s *tenancy.Store) error {
				if err := s.CreateBot(cmd.Context(), tenant, args[0], name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "bot %s created for tenant %s\n", args[0], tenant)
				return nil
			})
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant id (required)")
	create.Flags().StringVar(&name, "name", "", "display name")
	_ = create.MarkFlagRequired("tenant")
	cmd.AddCommand(create)
	return cmd
}
