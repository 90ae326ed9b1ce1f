package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/spf13/cobra"
)

func (a *app) keys() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage API keys"}
	cmd.AddCommand(a.keysCreate(), a.keysList(), a.keysRevoke())
	return cmd
}

// keyOwner reads --tenant and --platform: exactly one names the key's owner.
func keyOwner(tenant string, platform bool) error {
	if (tenant == "") == !platform {
		return errors.New("name the key's owner: --tenant ID or --platform (exactly one)")
	}
	return nil
}

func (a *app) keysCreate() *cobra.Command {
	var (
		tenant, name, scopes, kind string
		origins                    []string
		platform                   bool
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an API key (printed once; only its hash is stored)",
		Long: `Create an API key (printed once; only its hash is stored).

Server keys (pk_...) are secrets for servers. Publishable keys (pub_...,
--kind publishable) go into web pages: they hold only the ingest scope and
work only from the --origins listed. Platform keys (plat_..., --platform)
belong to no tenant and hold only the operator scope (platform-wide
operations such as rebuilding projections).`,
		Example: `  parleyctl keys create --tenant acme --scopes read,rules --name "support console"
  parleyctl keys create --tenant acme --kind publishable --origins https://a.example,https://b.example
  parleyctl keys create --platform --name "on-call"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := keyOwner(tenant, platform); err != nil {
				return err
			}
			spec := tenancy.KeySpec{TenantID: tenant, Name: name, Kind: kind, Scopes: strings.Split(scopes, ","), AllowedOrigins: origins}
			if platform && !cmd.Flags().Changed("scopes") {
				spec.Scopes = []string{grpcx.ScopeOperator}
			}
			return a.withStore(cmd.Context(), func(s *tenancy.Store) error {
				key, id, err := s.CreateKey(cmd.Context(), spec)
				if err != nil {
					return err
				}
				owner := "tenant " + tenant
				if platform {
					owner = "the platform"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s key %s for %s with scopes %s (store it now; it is not shown again)\n",
					spec.Kind, id, owner, strings.Join(spec.Scopes, ","))
				fmt.Fprintln(cmd.OutOrStdout(), key)
				return nil
			})
		},
	}
	f := create.Flags()
	f.StringVar(&tenant, "tenant", "", "tenant id (or --platform)")
	f.BoolVar(&platform, "platform", false, "a platform key: no tenant, operator scope")
	f.StringVar(&name, "name", "", "what the key is for")
	f.StringVar(&scopes, "scopes", "ingest", "comma-separated scopes: ingest, read, rules, admin (operator for --platform)")
	f.StringVar(&kind, "kind", grpcx.KindServer, "server or publishable")
	f.StringSliceVar(&origins, "origins", nil, "browser origins a publishable key works from, comma separated (scheme://host[:port])")
	return create
}

func (a *app) keysList() *cobra.Command {
	var (
		tenant            string
		platform, revoked bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (never their secrets): every key, one tenant's, or the platform keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant != "" && platform {
				return errors.New("--tenant and --platform exclude each other")
			}
			return a.withStore(cmd.Context(), func(s *tenancy.Store) error {
				keys, err := s.ListKeys(cmd.Context(), tenancy.KeyFilter{TenantID: tenant, Platform: platform, Revoked: revoked})
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "KEY ID\tTENANT\tKIND\tSCOPES\tORIGINS\tNAME\tCREATED\tREVOKED")
				for _, k := range keys {
					owner, kind := k.TenantID, k.Kind
					if owner == "" {
						owner, kind = "-", "platform"
					}
					rev := "-"
					if k.RevokedAt != nil {
						rev = k.RevokedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.KeyID, owner, kind, strings.Join(k.Scopes, ","),
						orDash(strings.Join(k.AllowedOrigins, ",")), orDash(k.Name), k.CreatedAt.UTC().Format(time.RFC3339), rev)
				}
				return w.Flush()
			})
		},
	}
	list.Flags().StringVar(&tenant, "tenant", "", "only this tenant's keys")
	list.Flags().BoolVar(&platform, "platform", false, "only platform keys")
	list.Flags().BoolVar(&revoked, "revoked", false, "include revoked keys")
	return list
}

func (a *app) keysRevoke() *cobra.Command {
	var (
		tenant   string
		platform bool
	)
	revoke := &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke an API key (effective within PARLEY_AUTH_CACHE_TTL, 30 seconds by default)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := keyOwner(tenant, platform); err != nil {
				return err
			}
			return a.withStore(cmd.Context(), func(s *tenancy.Store) error {
				if err := s.RevokeAPIKey(cmd.Context(), tenant, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "key %s revoked\n", args[0])
				return nil
			})
		},
	}
	revoke.Flags().StringVar(&tenant, "tenant", "", "the key's tenant (or --platform)")
	revoke.Flags().BoolVar(&platform, "platform", false, "the key is a platform key")
	return revoke
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
