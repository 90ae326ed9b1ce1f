package ingest_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/grpcx"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest"
)

// cpuTime is the process's user + system CPU time (ingest, the embedded
// NATS server and the client all run in it).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMaskingCPU reports the CPU per event of appending batches of 100
// ~350-byte messages through ingest's gRPC Append without masking rules,
// then with four rules (email, phone, card, IBAN; mask), and the ratio of
// the two ("x-unmasked"): for messages with an email and a card number
// ("pii") and for plain ones ("plain", the detectors' cheap pre-checks
// skip them).
//
//	go test ./services/ingest -run XXX -bench MaskingCPU -benchtime 20000x
func BenchmarkMaskingCPU(b *testing.B) {
	m := startMasking(b, func(c *ingest.Config) {
		c.MaxBatch, c.CommitMode, c.MaxRequestBytes = 1000, "pipelined", 4<<20
	})
	texts := map[string]string{
		"pii":   strings.Repeat("where is my order? ", 15) + "mail jane@example.com card 4111 1111 1111 1111",
		"plain": strings.Repeat("where is my order? ", 15) + "it was due on Monday, order 4411",
	}
	base := map[string]float64{}
	run := func(b *testing.B, text string) float64 {
		calls := max(b.N/100, 1)
		start := cpuTime(b)
		for range calls {
			if _, err := m.client.Append(m.as("acme", grpcx.ScopeIngest), &ingestv1.AppendRequest{Events: batch(100, text)}); err != nil {
				b.Fatal(err)
			}
		}
		per := float64((cpuTime(b) - start).Microseconds()) / float64(calls*100)
		b.ReportMetric(per, "cpu-µs/event")
		return per
	}
	for _, k := range []string{"pii", "plain"} {
		b.Run("no-rules/"+k, func(b *testing.B) { base[k] = run(b, texts[k]) })
	}
	for _, d := range []string{"email", "phone", "card", "iban"} {
		m.put(b, "acme", &ingestv1.MaskingRule{Id: d, Detector: d, Action: "mask"})
	}
	for _, k := range []string{"pii", "plain"} {
		b.Run("4-rules/"+k, func(b *testing.B) {
			if per := run(b, texts[k]); base[k] > 0 {
				b.ReportMetric(per/base[k], "x-unmasked")
			}
		})
	}
}
