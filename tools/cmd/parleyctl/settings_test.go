package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/parley-dev/parley/tools/stack"
)

// TestSettingsCommands runs `parleyctl settings ...` against the local
// stack: time zone and bot names through reporting, session timeouts
// through lifecycle, bad values refused naming the field.
func TestSettingsCommands(t *testing.T) {
	ctx := context.Background()
	st, err := stack.Start(ctx, stack.Options{Dir: t.TempDir(), FreePorts: true, DemoTenant: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(append([]string{"settings"}, args...), "--addr", st.GRPCAddr("reporting"),
			"--lifecycle-addr", st.GRPCAddr("lifecycle"), "--api-key", st.DemoKey))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	if out, err := run("show"); err != nil || !strings.Contains(out, "time zone  UTC") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if out, err := run("set", "--time-zone", "Europe/Berlin"); err != nil || !strings.Contains(out, "time zone  Europe/Berlin") {
		t.Fatalf("set: %v\n%s", err, out)
	}
	if out, err := run("bots", "set", "shop", "--name", "Shop assistant"); err != nil || !strings.Contains(out, "bot shop   Shop assistant") {
		t.Fatalf("bots set: %v\n%s", err, out)
	}
	out, err := run("show")
	if err != nil || !strings.Contains(out, "Europe/Berlin") || !strings.Contains(out, "Shop assistant") {
		t.Fatalf("show after set: %v\n%s", err, out)
	}
	if out, err := run("set", "--time-zone", "Mars/Olympus"); err == nil || !strings.Contains(out, "InvalidArgument") || !strings.Contains(out, "time_zone") {
		t.Fatalf("bad zone: %v\n%s", err, out)
	}
	if out, err := run("timeouts", "set", "--channel", "whatsapp", "--timeout", "24h"); err != nil || !strings.Contains(out, "whatsapp set to 24h0m0s") {
		t.Fatalf("timeouts set: %v\n%s", err, out)
	}
	if out, err := run("timeouts", "list"); err != nil || !strings.Contains(out, "tenant   whatsapp  24h0m0s") {
		t.Fatalf("timeouts list: %v\n%s", err, out)
	}
}
