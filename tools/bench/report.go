package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// WriteMarkdown renders the report as BENCHMARKS.md.
func (r *Report) WriteMarkdown(w io.Writer, command string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Measured by `%s` (tools/bench) on %s UTC; the run took %s.\n\n", command, r.Started.UTC().Format("2006-01-02 15:04"), r.Duration.Round(time.Second))
	fmt.Fprintf(&b, "Machine: %s. Everything ran on it at once: NATS JetStream (embedded, file storage), PostgreSQL 15, ClickHouse 18.16, and the five services as separate processes (the load from loadgen in this process, except in the sustained phase, where a loadgen process of its own keeps its CPU apart). ", r.Machine)
	b.WriteString("Each figure stands next to the ceiling or baseline measured in the same run, because these machines are shared and noisy: the ratio is the figure to compare across runs. Targets are the ones in the issue; misses are information.\n\n")
	b.WriteString("## Targets\n\nEvery figure with a target, in one place (details in the sections below).\n\n| Measurement | Value | Target | Met |\n|---|---|---|---|\n")
	for _, res := range r.Results {
		if res.Met != nil {
			fmt.Fprintf(&b, "| %s: %s | %s %s | %s | %s |\n", res.Group, res.Name, num(res.Value), res.Unit, res.Target, yesNo(*res.Met))
		}
	}
	group := ""
	for _, res := range r.Results {
		if res.Group != group {
			group = res.Group
			fmt.Fprintf(&b, "\n## %s\n\n| Measurement | Value | Reference (same run) | Ratio | Target | Met |\n|---|---|---|---|---|---|\n", group)
		}
		ref, ratio := "", ""
		if res.Reference != "" {
			ref = fmt.Sprintf("%s: %s", res.Reference, num(res.ReferenceValue))
			ratio = fmt.Sprintf("%.2f×", res.Ratio)
		}
		metCell := ""
		if res.Met != nil {
			metCell = yesNo(*res.Met)
		}
		name := res.Name
		if res.Note != "" {
			name += " (" + res.Note + ")"
		}
		fmt.Fprintf(&b, "| %s | %s %s | %s | %s | %s | %s |\n", name, num(res.Value), res.Unit, ref, ratio, res.Target, metCell)
	}
	b.WriteString("\n## How to reproduce\n\n")
	b.WriteString("```sh\nmake bench                      # everything above; writes BENCHMARKS.md\n")
	b.WriteString("PARLEY_BENCH_PHASE=60s make bench # longer throughput phases\n")
	b.WriteString("go test ./services/ingest -run XXX -bench Append -benchtime 20000x          # ingest alone, both sync settings\n")
	b.WriteString("go test ./libs/eventbus -run XXX -bench GroupCommit -benchtime 20000x       # group commit against raw publish\n")
	b.WriteString("go test ./services/reporting -run XXX -bench QueriesAt1M -benchtime 20x     # queries at 1M conversations\n")
	b.WriteString("go test ./services/tagging -run '^$' -bench TaggingConsumer -benchtime 20000x # tagging with 10 and 100 rules\n")
	b.WriteString("go test ./services/tagging -run '^$' -bench TaggingHandle -benchtime 20000x  # tagging's handler: CPU and PostgreSQL work per event\n")
	b.WriteString("go test ./services/lifecycle -run '^$' -bench LifecycleConsumer -benchtime 30000x # lifecycle alone, NATS syncing every write\n")
	b.WriteString("go test ./services/reporting -run '^$' -bench Projector -benchtime 100000x    # the projector's CPU per event against a raw insert\n")
	b.WriteString("go test ./services/notification -run '^$' -bench . -benchtime 5x            # event → webhook latency at 1,000/s and fan-out, in process\n```\n")
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	if r.Kept != "" {
		b.WriteString("\n" + strings.TrimRight(r.Kept, "\n") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// keptHeadings are the hand-written sections of BENCHMARKS.md that a run
// carries over instead of regenerating (analyses that cite profiles).
var keptHeadings = []string{"## Why the targets are missed"}

// KeptSections returns the hand-written sections of a previous
// BENCHMARKS.md, each from its heading up to the next level-2 heading, so
// that a new run keeps them.
func KeptSections(old string) string {
	lines := strings.Split(old, "\n")
	var out []string
	keep := false
	for _, line := range lines {
		if strings.HasPrefix(line, "## ") {
			keep = slices.Contains(keptHeadings, strings.TrimSpace(line))
		}
		if keep {
			out = append(out, line)
		}
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func num(v float64) string {
	switch {
	case v >= 100:
		return groupThousands(fmt.Sprintf("%.0f", v))
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func groupThousands(s string) string {
	n := len(s)
	if n <= 3 {
		return s
	}
	var out []byte
	for i := range n {
		if i > 0 && (n-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
