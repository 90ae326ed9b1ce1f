package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parley-dev/parley/tools/stack"
)

// TestExportsCommands runs `parleyctl exports create|list|download|verify`
// against the local stack's reporting service.
func TestExportsCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := stack.Start(ctx, stack.Options{Dir: filepath.Join(dir, "stack"), FreePorts: true, DemoTenant: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(append([]string{"exports"}, args...), "--addr", st.GRPCAddr("reporting"), "--api-key", st.DemoKey))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	out, err := run("create", "--source", "report", "--kind", "billing", "--format", "csv", "--filter", `{"time_range":{"preset":"all_time"}}`, "--wait")
	if err != nil || !strings.Contains(out, "EXPORT_STATE_SUCCEEDED") {
		t.Fatalf("create: %v\n%s", err, out)
	}
	var created struct {
		ExportID string `json:"export_id"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ExportID == "" {
		t.Fatalf("create output: %v\n%s", err, out)
	}
	id := created.ExportID
	if out, err = run("list"); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "SUCCEEDED") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	file := filepath.Join(dir, "billing.csv")
	if out, err = run("download", id, "-o", file); err != nil || !strings.Contains(out, "verified") {
		t.Fatalf("download: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil || len(rows) < 1 || rows[0][0] != "bot_id" {
		t.Fatalf("file: %v %q", err, raw)
	}
	if out, err = run("verify", file); err != nil || !strings.Contains(out, id) {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	// One byte more: verify refuses.
	if err := os.WriteFile(file, append(raw, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err = run("verify", file); err == nil || !strings.Contains(err.Error(), "altered") {
		t.Fatalf("altered file verified: %v", err)
	}
	// The file lives under the stack's directory.
	if m, _ := filepath.Glob(filepath.Join(dir, "stack", "exports", "*", id+".csv")); len(m) != 1 {
		t.Fatalf("file not under the stack's exports dir: %v", m)
	}
}
