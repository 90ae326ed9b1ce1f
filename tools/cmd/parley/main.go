// Command parley runs any set of Parley's services in one process, the way
// Loki and Tempo run their components from one binary:
//
//	parley -target=all                 # every service (the default)
//	parley -target=ingest,reporting    # some of them
//	parley --target lifecycle          # one, as each Kubernetes Deployment does
//
// Each target reads its configuration from the environment exactly as when
// it runs alone (README.md, "Configuration"), listens on its own ports, logs
// JSON lines tagged with its name to stderr and serves its own /metrics. On
// SIGINT or SIGTERM every target drains gracefully. Exit status: 0 after a
// clean stop, 2 for an unknown target or bad configuration, 1 when a target
// fails (the others are then stopped).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/services/ingest"
	"github.com/parley-dev/parley/services/lifecycle"
	"github.com/parley-dev/parley/services/notification"
	"github.com/parley-dev/parley/services/reporting"
	"github.com/parley-dev/parley/services/tagging"
	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// targets are the services this binary runs, in start order.
func targets() []service.Target {
	return []service.Target{
		service.NewTarget("ingest", ingest.Run),
		service.NewTarget("lifecycle", lifecycle.Run),
		service.NewTarget("tagging", tagging.Run),
		service.NewTarget("reporting", reporting.Run),
		service.NewTarget("notification", notification.Run),
	}
}

// errUsage marks a malformed command line.
var errUsage = errors.New("usage")

// run executes the command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	known := targets()
	names := make([]string, len(known))
	for i, t := range known {
		names[i] = t.Name
	}
	var spec string
	root := &cobra.Command{
		Use:   "parley [-target=all|" + strings.Join(names, ",") + "]",
		Short: "Run Parley's services: all of them or the targets named",
		Long: "Run Parley's services in this process: all of them (-target=all, the default) or a comma separated\n" +
			"list of " + strings.Join(names, ", ") + ". Each reads its configuration from the environment\n" +
			"(PARLEY_*; see README.md, \"Configuration\") and listens on its own ports. SIGTERM drains them all.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("%w: unexpected argument %q", errUsage, args[0])
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			selected, err := service.Select(known, spec)
			if err != nil {
				return err
			}
			return service.RunTargets(cmd.Context(), selected)
		},
	}
	root.Flags().StringVar(&spec, "target", service.AllTargets, "the services to run: all, or a comma separated list of "+strings.Join(names, ", "))
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", errUsage, err) })
	root.SetArgs(singleDashLongFlags(args, "target", "help"))
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, service.ErrConfig):
		fmt.Fprintln(stderr, "parley:", err)
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "parley:", err)
		fmt.Fprint(stderr, root.UsageString())
		return 2
	default:
		fmt.Fprintln(stderr, "parley:", err)
		return 1
	}
}

// singleDashLongFlags rewrites -name and -name=value of the given long flags
// to --name, so that -target=all works as in Loki and Tempo (pflag reads a
// single dash as shorthand letters).
func singleDashLongFlags(args []string, long ...string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") {
			name, _, _ := strings.Cut(a[1:], "=")
			for _, l := range long {
				if name == l {
					a = "-" + a
					break
				}
			}
		}
		out = append(out, a)
	}
	return out
}
