package reporting_test

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestZZScratch(t *testing.T) {
	conn := seedDocsDatabase(t)
	b, _ := os.ReadFile("/tmp/scratch.sql")
	for _, q := range strings.Split(string(b), "\n;;\n") {
		if strings.TrimSpace(q) == "" {
			continue
		}
		n, s, err := runCounting(context.Background(), conn, q)
		t.Logf("\n%s\n=> n=%d err=%v first: %s", q, n, err, s)
	}
}
