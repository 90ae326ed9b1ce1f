package bench_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/parley-dev/parley/tools/bench"
)

// A run rewrites BENCHMARKS.md from its figures but keeps the hand-written
// analysis ("## Why the targets are missed") of the previous file.
func TestWriteMarkdownKeepsTheAnalysis(t *testing.T) {
	old := "# Benchmarks\n\n## Targets\n\n| a | b |\n\n## Why the targets are missed\n\nNATS: delivery dominates.\n\n### Reporting memory\n\nheap.\n\n## Notes\n\n- old note\n"
	kept := bench.KeptSections(old)
	want := "## Why the targets are missed\n\nNATS: delivery dominates.\n\n### Reporting memory\n\nheap."
	if kept != want {
		t.Fatalf("KeptSections = %q, want %q", kept, want)
	}
	rep := &bench.Report{Results: []bench.Result{{Group: "G", Name: "n", Value: 1, Unit: "x"}}, Notes: []string{"new note"}, Kept: kept}
	var b strings.Builder
	if err := rep.WriteMarkdown(&b, "make bench"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, want+"\n") || strings.Contains(out, "old note") || !strings.Contains(out, "new note") {
		t.Fatalf("rendered report lost the analysis or kept stale notes:\n%s", out)
	}
	// Rendering again keeps it exactly once.
	if again := bench.KeptSections(out); again != want {
		t.Fatalf("second run keeps %q, want %q", again, want)
	}
}

func TestParsePhases(t *testing.T) {
	got, err := bench.ParsePhases(" sustained, rebuild ,")
	if err != nil || !reflect.DeepEqual(got, []string{"sustained", "rebuild"}) {
		t.Fatalf("ParsePhases = %v, %v", got, err)
	}
	if got, err := bench.ParsePhases(""); err != nil || got != nil {
		t.Fatalf("empty selects every phase, got %v, %v", got, err)
	}
	if _, err := bench.ParsePhases("sustianed"); err == nil || !strings.Contains(err.Error(), "sustianed") {
		t.Fatalf("unknown phase accepted: %v", err)
	}
}
