package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"
)

// Target is one service a process can run (the parley binary's -target).
type Target struct {
	Name string
	// load reads the service's configuration from the environment and
	// returns the service bound to it.
	load func() (func(context.Context) error, error)
}

// NewTarget makes service name a target: its configuration C is read from
// the environment (Load) and run serves it.
func NewTarget[C any, P configurable[C]](name string, run func(context.Context, C) error) Target {
	return Target{Name: name, load: func() (func(context.Context) error, error) {
		cfg, err := Load[C, P](name)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return run(ctx, cfg) }, nil
	}}
}

// AllTargets names every target.
const AllTargets = "all"

// ErrConfig marks errors in the choice of targets or their configuration
// (as opposed to a failure while running).
var ErrConfig = errors.New("configuration")

// Select returns the targets spec names: "all" (every one of known) or a
// comma separated list of names, in known's order, each once.
func Select(known []Target, spec string) ([]Target, error) {
	names := make([]string, len(known))
	for i, t := range known {
		names[i] = t.Name
	}
	want := map[string]bool{}
	for _, n := range strings.Split(spec, ",") {
		n = strings.ToLower(strings.TrimSpace(n))
		switch {
		case n == "":
		case n == AllTargets:
			for _, k := range names {
				want[k] = true
			}
		case slices.Contains(names, n):
			want[n] = true
		default:
			return nil, fmt.Errorf("%w: unknown target %q: use %s or a comma separated list of %s", ErrConfig, n, AllTargets, strings.Join(names, ", "))
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("%w: no target: use %s or a comma separated list of %s", ErrConfig, AllTargets, strings.Join(names, ", "))
	}
	var out []Target
	for _, t := range known {
		if want[t.Name] {
			out = append(out, t)
		}
	}
	return out, nil
}

// RunTargets reads every target's configuration first (an error there wraps
// ErrConfig and nothing starts), then runs them together until ctx is
// cancelled, when each shuts down gracefully, or one fails, when the others
// are stopped too.
func RunTargets(ctx context.Context, targets []Target) error {
	runs := make([]func(context.Context) error, len(targets))
	for i, t := range targets {
		run, err := t.load()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		runs[i] = run
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, run := range runs {
		g.Go(func() error {
			if err := run(gctx); err != nil {
				if strings.HasPrefix(err.Error(), targets[i].Name+":") {
					return err
				}
				return fmt.Errorf("%s: %w", targets[i].Name, err)
			}
			// A target that returns while the others run stops them all:
			// the process is meant to serve every target it was given.
			if ctx.Err() == nil {
				return fmt.Errorf("%s stopped", targets[i].Name)
			}
			return nil
		})
	}
	return g.Wait()
}
