package service_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/service"
)

type exampleConfig struct {
	service.Config
	Batch int `env:"PARLEY_EXAMPLE_BATCH" envDefault:"5"`
}

// TestLoadNamesAddressesAfterTheService: the header reads the variables
// every service read before it existed: shared ones as they are, listen
// addresses under the service's own name, with its defaults.
func TestLoadNamesAddressesAfterTheService(t *testing.T) {
	t.Setenv("PARLEY_LIFECYCLE_GRPC_ADDR", "127.0.0.1:9102")
	t.Setenv("PARLEY_TAGGING_ADMIN_ADDR", "127.0.0.1:9203") // another service's: ignored
	t.Setenv("PARLEY_LOG_LEVEL", "debug")
	t.Setenv("PARLEY_POSTGRES_MAX_CONNS", "7")
	cfg, err := service.Load[exampleConfig]("lifecycle")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GRPCAddr != "127.0.0.1:9102" || cfg.AdminAddr != "127.0.0.1:7202" || cfg.Server.LogLevel != "debug" ||
		cfg.Postgres.MaxConns != 7 || cfg.NATS.URL != "nats://127.0.0.1:4222" || cfg.Server.ShutdownTimeout != 20*time.Second || cfg.Batch != 5 {
		t.Fatalf("loaded %+v", cfg)
	}
	for i, name := range service.Names() {
		vars := service.ListenVars(name)
		up := "PARLEY_" + strings.ToUpper(name)
		if len(vars) != 2 || vars[up+"_GRPC_ADDR"] != ":710"+string(rune('1'+i)) || vars[up+"_ADMIN_ADDR"] != "127.0.0.1:720"+string(rune('1'+i)) {
			t.Errorf("%s: %v", name, vars)
		}
	}
}

// TestSelect: "all", comma lists in any order and case (each once, in start
// order), and clear errors for unknown or missing targets.
func TestSelect(t *testing.T) {
	run := func(context.Context, exampleConfig) error { return nil }
	var known []service.Target
	for _, n := range service.Names() {
		known = append(known, service.NewTarget(n, run))
	}
	names := func(ts []service.Target) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.Name)
		}
		return strings.Join(s, ",")
	}
	for spec, want := range map[string]string{
		"all":                     "ingest,lifecycle,tagging,reporting,notification",
		"reporting, Ingest":       "ingest,reporting",
		"ingest,ingest":           "ingest",
		"notification,all,ingest": "ingest,lifecycle,tagging,reporting,notification",
	} {
		got, err := service.Select(known, spec)
		if err != nil || names(got) != want {
			t.Errorf("Select(%q) = %s, %v; want %s", spec, names(got), err, want)
		}
	}
	for spec, want := range map[string]string{"ingest,pigeon": `unknown target "pigeon"`, "": "no target", " , ": "no target"} {
		_, err := service.Select(known, spec)
		if !errors.Is(err, service.ErrConfig) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "ingest, lifecycle, tagging, reporting, notification") {
			t.Errorf("Select(%q) error %v, want %q listing the targets", spec, err, want)
		}
	}
}

// TestRunTargetsChecksEveryConfigurationFirst: one target's bad
// configuration stops the process before any target runs.
func TestRunTargetsChecksEveryConfigurationFirst(t *testing.T) {
	t.Setenv("PARLEY_EXAMPLE_BATCH", "many")
	ran := false
	good := service.NewTarget("ingest", func(context.Context, service.Config) error { ran = true; return nil })
	bad := service.NewTarget("tagging", func(context.Context, exampleConfig) error { ran = true; return nil })
	err := service.RunTargets(context.Background(), []service.Target{good, bad})
	if !errors.Is(err, service.ErrConfig) || !strings.Contains(err.Error(), `"Batch"`) || ran {
		t.Fatalf("err %v, ran %v; want a configuration error naming the field and nothing run", err, ran)
	}
}
