package eventbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
)

// StoredMsg is one message read back from PARLEY_CONV.
type StoredMsg struct {
	Sequence uint64
	Subject  string
	Time     time.Time
	// MsgID is the Nats-Msg-Id it was published with (MsgID).
	MsgID  string
	Header nats.Header
	Data   []byte
}

// EventID is the tenant's event id the message was published with.
func (m StoredMsg) EventID(tenantID string) string { return EventIDOfMsgID(tenantID, m.MsgID) }

// Envelope decodes the message's envelope.
func (m StoredMsg) Envelope() (*eventv1.Envelope, error) {
	env := &eventv1.Envelope{}
	if err := proto.Unmarshal(m.Data, env); err != nil {
		return nil, fmt.Errorf("eventbus: decode %s: %w", m.Subject, err)
	}
	return env, nil
}

func storedMsg(m *jetstream.RawStreamMsg) StoredMsg {
	return StoredMsg{Sequence: m.Sequence, Subject: m.Subject, Time: m.Time, MsgID: m.Header.Get(jetstream.MsgIDHeader), Header: m.Header, Data: m.Data}
}

// LastOnSubject returns the last message PARLEY_CONV holds on subject
// (wildcards allowed, e.g. ConvSubject(t, c, "*")); found is false when
// there is none.
func (b *Bus) LastOnSubject(ctx context.Context, subject string) (m StoredMsg, found bool, err error) {
	st, err := b.convStream(ctx)
	if err != nil {
		return StoredMsg{}, false, err
	}
	raw, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return StoredMsg{}, false, nil
	}
	if err != nil {
		return StoredMsg{}, false, fmt.Errorf("eventbus: last on %s: %w", subject, classify(err))
	}
	return storedMsg(raw), true, nil
}

// NextOnSubject returns the first message PARLEY_CONV holds on subject at
// or after sequence seq; found is false when there is none.
func (b *Bus) NextOnSubject(ctx context.Context, seq uint64, subject string) (m StoredMsg, found bool, err error) {
	st, err := b.convStream(ctx)
	if err != nil {
		return StoredMsg{}, false, err
	}
	raw, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return StoredMsg{}, false, nil
	}
	if err != nil {
		return StoredMsg{}, false, fmt.Errorf("eventbus: next on %s: %w", subject, classify(err))
	}
	return storedMsg(raw), true, nil
}

// DeleteConsumer removes the durable consumer of PARLEY_CONV named durable;
// a consumer that does not exist is not an error.
func (b *Bus) DeleteConsumer(ctx context.Context, durable string) error {
	err := b.js.DeleteConsumer(ctx, ConvStream, durable)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("eventbus: delete consumer %s: %w", durable, classify(err))
	}
	return nil
}

// KeyValue opens the bucket named bucket; found is false when it does not
// exist.
func (b *Bus) KeyValue(ctx context.Context, bucket string) (kv jetstream.KeyValue, found bool, err error) {
	kv, err = b.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("eventbus: bucket %s: %w", bucket, classify(err))
	}
	return kv, true, nil
}

// EnsureKeyValue creates the bucket cfg describes or updates it to cfg.
// With allowAtomic the bucket's stream also accepts atomic batches
// (PublishAtomic), so that many entries cost one stream write; updating a
// bucket resets its stream's configuration, so this is applied every time.
func (b *Bus) EnsureKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig, allowAtomic bool) (jetstream.KeyValue, error) {
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("eventbus: bucket %s: %w", cfg.Bucket, classify(err))
	}
	if !allowAtomic {
		return kv, nil
	}
	st, err := b.js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("eventbus: bucket %s: %w", cfg.Bucket, classify(err))
	}
	if scfg := st.CachedInfo().Config; !scfg.AllowAtomicPublish {
		scfg.AllowAtomicPublish = true
		if _, err := b.js.UpdateStream(ctx, scfg); err != nil {
			return nil, fmt.Errorf("eventbus: bucket %s: allow atomic batches: %w", cfg.Bucket, classify(err))
		}
	}
	return kv, nil
}

// convStream is the PARLEY_CONV handle, looked up once.
func (b *Bus) convStream(ctx context.Context) (jetstream.Stream, error) {
	b.streamMu.Lock()
	defer b.streamMu.Unlock()
	if b.stream != nil {
		return b.stream, nil
	}
	st, err := b.js.Stream(ctx, ConvStream)
	if err != nil {
		return nil, fmt.Errorf("eventbus: stream %s: %w", ConvStream, classify(err))
	}
	b.stream = st
	return st, nil
}
