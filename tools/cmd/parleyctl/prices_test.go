package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/parley-dev/parley/tools/stack"
)

// TestPricesCommands runs `parleyctl prices set|list` against the local
// stack's reporting service.
func TestPricesCommands(t *testing.T) {
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
		root.SetArgs(append(append([]string{"prices"}, args...), "--addr", st.GRPCAddr("reporting"), "--api-key", st.DemoKey))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	if _, err := run("set", "--model", "mini", "--currency", "EUR", "--input", "0.4", "--output", "1.600001"); err != nil {
		t.Fatal(err)
	}
	if _, err := run("set", "--model", "mini", "--currency", "euro"); err == nil || !strings.Contains(err.Error(), "price.currency") {
		t.Fatalf("bad currency: %v", err)
	}
	if _, err := run("set", "--model", "mini", "--input", "0.0000001"); err == nil || !strings.Contains(err.Error(), "--input") {
		t.Fatalf("seven decimals: %v", err)
	}
	out, err := run("list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "mini EUR 0.4 1.600001 ") {
		t.Fatalf("list:\n%s", out)
	}
}

func TestMicros(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "0.4": 400_000, "1.600001": 1_600_001, "12": 12_000_000, "3.": 3_000_000} {
		if got, err := micros(in); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", ".5", "1.2345678", "x", "+1"} {
		if _, err := micros(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if units(1_600_001) != "1.600001" || units(400_000) != "0.4" || units(5_000_000) != "5" {
		t.Error("units")
	}
}
