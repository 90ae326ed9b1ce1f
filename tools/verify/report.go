package verify

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Write prints a table per tenant, the discrepancies and notes, and a final
// line: "OK: 0 lost, 0 duplicated, N conversations ended once", or "FAIL:
// ..." with the number of discrepancies.
func (r *Report) Write(w io.Writer) {
	for _, t := range r.Tenants {
		fmt.Fprintf(w, "tenant %s: %d acknowledgements (%d duplicates) of %d events in %d conversations, %d closed\n",
			t.Tenant, t.AckLines, t.AckDuplicates, t.Events, t.Conversations, t.Closed)
		fmt.Fprintf(w, "  %-50s %10s %10s\n", "check", "expected", "actual")
		for _, row := range t.Rows {
			mark, exp := "ok", fmt.Sprint(row.Expected)
			switch {
			case row.Info:
				mark, exp = "", ""
			case !row.OK():
				mark = "MISMATCH"
			}
			fmt.Fprintf(w, "  %-50s %10s %10d  %s\n", row.Check, exp, row.Actual, mark)
		}
		fmt.Fprintln(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s: %d %s\n", n.Tenant, n.Count, n.Description)
	}
	for _, p := range r.Problems {
		more := ""
		if p.Count > len(p.IDs) {
			more = fmt.Sprintf(", ... (%d more)", p.Count-len(p.IDs))
		}
		fmt.Fprintf(w, "DISCREPANCY %s %s: %d %s: %s%s\n", p.Tenant, p.Check, p.Count, p.Description, strings.Join(p.IDs, ", "), more)
	}
	waited := fmt.Sprintf(" (%d rounds in %s: stream %s, PostgreSQL and ClickHouse %s)", r.Rounds,
		r.Waited.Round(100*time.Millisecond), r.StreamTime.Round(100*time.Millisecond), r.StoreTime.Round(100*time.Millisecond))
	if r.OK() {
		fmt.Fprintf(w, "OK: %d lost, %d duplicated, %d conversations ended once%s\n", r.Lost, r.Duplicated, r.EndedOnce, waited)
		return
	}
	fmt.Fprintf(w, "FAIL: %d lost, %d duplicated, %d conversations ended once; %d kinds of discrepancy%s\n", r.Lost, r.Duplicated, r.EndedOnce, len(r.Problems), waited)
}
