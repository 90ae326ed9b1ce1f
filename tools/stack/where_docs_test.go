package stack

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEWhereTableIsTrue keeps the README's "Where does X happen" table
// true: every file it names exists, and the behaviours it must cover are
// there.
func TestREADMEWhereTableIsTrue(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Where does X happen\n")
	if !ok {
		t.Fatal(`README.md has no "## Where does X happen" section`)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	link := regexp.MustCompile("\\[`([^`]+)`\\]\\(([^)]+)\\)")
	var behaviours []string
	paths := 0
	for line := range strings.SplitSeq(section, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| Behaviour ") {
			continue
		}
		cells := strings.Split(line, " | ")
		if len(cells) != 2 {
			t.Errorf("row %q: want two cells", line)
			continue
		}
		behaviours = append(behaviours, strings.ToLower(cells[0]))
		links := link.FindAllStringSubmatch(cells[1], -1)
		if len(links) == 0 {
			t.Errorf("row %q names no file", line)
		}
		for _, l := range links {
			if l[1] != l[2] {
				t.Errorf("link text %s differs from its target %s", l[1], l[2])
			}
			if st, err := os.Stat("../../" + l[2]); err != nil || st.IsDir() {
				t.Errorf("%s (row %q) is not a file: %v", l[2], cells[0], err)
			}
			paths++
		}
	}
	if paths < 20 {
		t.Fatalf("found only %d paths; is the table parsed?", paths)
	}
	for _, want := range []string{"partitions", "positions", "dlq", "envelope", "auth", "rules", "cel", "stale sweep", "engagement",
		"response times", "projector", "search index", "freshness", "webhooks signing", "ssrf", "email"} {
		found := false
		for _, b := range behaviours {
			found = found || strings.Contains(b, want)
		}
		if !found {
			t.Errorf("the table has no row for %q", want)
		}
	}
}
