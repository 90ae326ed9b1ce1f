package ingest

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// natsMaxPayload asks the NATS server the largest message it accepts
// (max_payload, announced when a client connects).
func natsMaxPayload(url string) (int64, error) {
	nc, err := nats.Connect(url, nats.Name("parley-ingest-probe"), nats.Timeout(10*time.Second))
	if err != nil {
		return 0, fmt.Errorf("ingest: connect to NATS to read max_payload: %w", err)
	}
	defer nc.Close()
	return nc.MaxPayload(), nil
}

// clampRequestBytes keeps the request size limit within what NATS accepts in
// one message: a request larger than max_payload could carry an event that
// the event log refuses. It logs when it lowers the configured limit.
func clampRequestBytes(configured int, maxPayload int64, log *slog.Logger) int {
	if maxPayload <= 0 || int64(configured) <= maxPayload {
		return configured
	}
	log.Warn("PARLEY_INGEST_MAX_REQUEST_BYTES exceeds the NATS server's max_payload; using max_payload",
		"configured", configured, "max_payload", maxPayload)
	return int(maxPayload)
}
