package ingest

import (
	"context"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/services/ingest/internal/api"
)

// dryRunScan bounds how far back a dry run looks: the last this many
// messages of the whole stream (of which only the tenant's messages are
// read).
const dryRunScan = 100_000

// recentMessages reads a tenant's recent message_posted events from
// PARLEY_CONV for dry runs.
type recentMessages struct{ bus *eventbus.Bus }

// RecentMessages implements api.RecentMessages: the last n of the tenant's
// messages among the stream's last dryRunScan messages, oldest first.
func (r recentMessages) RecentMessages(ctx context.Context, tenantID string, n int) ([]api.StoredMessage, error) {
	st, found, err := r.bus.StreamState(ctx, eventbus.ConvStream)
	if err != nil || !found || st.LastSeq == 0 {
		return nil, err
	}
	from := uint64(1)
	if st.LastSeq > dryRunScan {
		from = st.LastSeq - dryRunScan + 1
	}
	rd, err := r.bus.Read(ctx, eventbus.ReadOptions{From: from, Filter: []string{eventbus.ConvSubject(tenantID, "*", "message_posted")}})
	if err != nil {
		return nil, err
	}
	ring := make([]api.StoredMessage, 0, n)
	for {
		var pending uint64
		got, err := rd.Fetch(500, 2*time.Second, func(m eventbus.LogMsg) error {
			pending = m.Pending
			if m.Seq > st.LastSeq {
				return nil
			}
			d, err := r.bus.Decode(m)
			if err != nil {
				return nil // an undecodable message is skipped
			}
			if len(ring) == n {
				ring = append(ring[:0], ring[1:]...)
			}
			ring = append(ring, api.StoredMessage{Sequence: m.Seq, Envelope: d.Envelope})
			return nil
		})
		if err != nil {
			return nil, err
		}
		if got == 0 || pending == 0 {
			return ring, nil
		}
	}
}
