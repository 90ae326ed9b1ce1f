package reporting_test

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/export"
	"github.com/parley-dev/parley/services/reporting/internal/filter"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"github.com/parley-dev/parley/services/reporting/synthetic"
)

// countingDiscard counts the bytes written and drops them.
type countingDiscard struct{ n int64 }

func (c *countingDiscard) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkExportConversations streams the conversation table of N
// synthetic conversations (PARLEY_BENCH_EXPORT_N, default 100,000; the
// issue's figure is 1,000,000) from ClickHouse into each format and reports
// rows/s, bytes/row and the most heap in use while it ran (with the heap
// in use before, the in-process service's).
//
//	go test ./services/reporting -run XXX -bench ExportConversations -benchtime 1x
func BenchmarkExportConversations(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("PARLEY_BENCH_EXPORT_N")); err == nil && v > 0 {
		n = v
	}
	f := startEmpty(b)
	ctx := context.Background()
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: f.ch.Addr, Database: f.ch.Database, User: "default"})
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	if err := synthetic.Insert(ctx, ch, synthetic.Options{Tenant: "acme", Prefix: "bench-", N: n, Span: 60 * 24 * time.Hour, End: time.Now()}); err != nil {
		b.Fatal(err)
	}
	reader := query.NewReader(ch, time.Minute)
	w, v := filter.Build("acme", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "all_time"}}, time.Now(), "UTC")
	if v != nil {
		b.Fatal(v)
	}
	cols := query.ExportColumns(query.ExportConversations)
	for _, format := range []export.Format{export.CSV, export.XLSX, export.Parquet} {
		b.Run(string(format), func(b *testing.B) {
			// The heap figures include the reporting service running in this
			// process: the base is what is in use before the export starts.
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			var peak atomic.Uint64
			stop := make(chan struct{})
			go func() {
				var m runtime.MemStats
				for {
					runtime.ReadMemStats(&m)
					if m.HeapInuse > peak.Load() {
						peak.Store(m.HeapInuse)
					}
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}()
			var rows, bytes int64
			start := time.Now()
			for b.Loop() {
				out := &countingDiscard{}
				fw, err := export.NewWriter(format, out, cols, export.WriterOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if err := reader.Stream(ctx, query.ExportConversations, w, query.ReportOptions{}, func(r []string) error {
					rows++
					return fw.Write(r)
				}); err != nil {
					b.Fatal(err)
				}
				if err := fw.Close(); err != nil {
					b.Fatal(err)
				}
				bytes += out.n
			}
			elapsed := time.Since(start)
			close(stop)
			if rows != int64(n)*int64(b.N) {
				b.Fatalf("%d rows, want %d", rows, int64(n)*int64(b.N))
			}
			b.ReportMetric(float64(rows)/elapsed.Seconds(), "rows/s")
			b.ReportMetric(float64(bytes)/float64(rows), "bytes/row")
			b.ReportMetric(float64(peak.Load())/(1<<20), "MB-heap-peak")
			b.ReportMetric(float64(base.HeapInuse)/(1<<20), "MB-heap-base")
		})
	}
}
