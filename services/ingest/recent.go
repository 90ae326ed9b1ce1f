package ingest

import (
	"context"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/services/ingest/internal/api"
)

// Bounds of a dry run's look back (docs/privacy.md): at most dryRunScan
// stream sequences before the end, and at most dryRunReads messages read.
const (
	dryRunScan  = 100_000
	dryRunReads = 2_000
)

// recentMessages reads a tenant's recent message_posted events from
// PARLEY_CONV for dry runs. It uses direct gets by subject (what ingest's
// NATS permissions allow), walking back from the end in growing windows.
type recentMessages struct{ bus *eventbus.Bus }

// RecentMessages implements api.RecentMessages: the tenant's last n
// messages, oldest first.
func (r recentMessages) RecentMessages(ctx context.Context, tenantID string, n int) ([]api.StoredMessage, error) {
	st, found, err := r.bus.StreamState(ctx, eventbus.ConvStream)
	if err != nil || !found || st.LastSeq == 0 {
		return nil, err
	}
	subject := eventbus.ConvSubject(tenantID, "*", "message_posted")
	var out []api.StoredMessage // newest window first, each window in order
	reads := 0
	hi := st.LastSeq
	for w := uint64(4 * n); len(out) < n && hi >= st.FirstSeq && st.LastSeq-hi < dryRunScan && reads < dryRunReads; w *= 2 {
		lo := st.FirstSeq
		if hi >= lo+w {
			lo = hi - w + 1
		}
		var window []api.StoredMessage
		for seq := lo; seq <= hi && reads < dryRunReads; {
			m, found, err := r.bus.NextOnSubject(ctx, seq, subject)
			reads++
			if err != nil {
				return nil, err
			}
			if !found || m.Sequence > hi {
				break
			}
			if env, err := m.Envelope(); err == nil {
				window = append(window, api.StoredMessage{Sequence: m.Sequence, Envelope: env})
			}
			seq = m.Sequence + 1
		}
		out = append(window, out...)
		if lo == st.FirstSeq {
			break
		}
		hi = lo - 1
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}
