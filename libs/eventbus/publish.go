package eventbus

// Raw publishing: building the NATS message of an envelope and the
// JetStream publish protocols (one message, pipelined, atomic batch). The
// GroupCommitter (groupcommit.go) batches requests on top of these.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
)

// Header names of JetStream atomic batch publishing (ADR-50, nats-server 2.12+).
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

// MaxAtomicBatch is the most messages JetStream accepts in one atomic batch.
const MaxAtomicBatch = 1000

// JetStream API error codes the group committer reacts to.
const (
	errCodeBatchDuplicate   = 10201 // atomic publish batch contains duplicate message id
	errCodeDuplicateProcess = 10158 // duplicate message id is in process
)

// batchedSize is what m counts against max_payload when published in an
// atomic batch: data and encoded headers, batch headers included.
func batchedSize(m *nats.Msg) int {
	return m.Size() - len(m.Subject) - len(m.Reply) + batchHeadersSize
}

// PublishAtomic stores msgs as one JetStream atomic batch (ADR-50,
// nats-server 2.12+; the stream must allow atomic publish): all of them or
// none, in one stream write (one fsync where the server syncs every write).
// It returns the stream sequence of the first message. A refusal by the
// server is a *jetstream.APIError (errors.As): for example a message id
// already stored (JSAtomicPublishContainsDuplicateMessageErr), a subject
// expectation not met, or atomic publish disabled on the stream.
func (b *Bus) PublishAtomic(ctx context.Context, msgs []*nats.Msg) (uint64, error) {
	if len(msgs) == 0 {
		return 0, errors.New("eventbus: empty atomic batch")
	}
	id := uuid.NewString()
	for i, m := range msgs {
		bm := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: make(nats.Header, len(m.Header)+3)}
		for k, v := range m.Header {
			bm.Header[k] = v
		}
		bm.Header.Set(headerBatchID, id)
		bm.Header.Set(headerBatchSeq, strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := b.nc.PublishMsg(bm); err != nil {
				return 0, fmt.Errorf("eventbus: batch publish: %w", classify(err))
			}
			continue
		}
		bm.Header.Set(headerBatchCommit, "1")
		rctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
		defer cancel()
		reply, err := b.nc.RequestMsgWithContext(rctx, bm)
		if err != nil {
			return 0, fmt.Errorf("eventbus: batch commit: %w", classify(err))
		}
		var ack batchPubAck
		if err := json.Unmarshal(reply.Data, &ack); err != nil {
			return 0, fmt.Errorf("eventbus: batch commit: bad reply %q: %w", reply.Data, err)
		}
		if ack.Error != nil {
			return 0, fmt.Errorf("eventbus: batch commit: %w", ack.Error)
		}
		if ack.Count != len(msgs) || ack.Seq < uint64(len(msgs)) {
			return 0, fmt.Errorf("eventbus: batch commit: stored %d of %d messages (seq %d)", ack.Count, len(msgs), ack.Seq)
		}
		return ack.Seq - uint64(len(msgs)) + 1, nil
	}
	return 0, errors.New("unreachable")
}

type batchPubAck struct {
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  int                 `json:"count"`
	Error  *jetstream.APIError `json:"error"`
}

// message completes and validates env and builds its NATS message with the
// Nats-Msg-Id (MsgID: tenant and event id), expected-stream, kind and trace
// headers.
func (b *Bus) message(ctx context.Context, env *eventv1.Envelope, now time.Time) (*nats.Msg, error) {
	completeEnvelope(env, b.opts.Producer, now)
	if err := Validate(env); err != nil {
		return nil, fmt.Errorf("eventbus: %w", err)
	}
	data, err := proto.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("eventbus: marshal: %w", err)
	}
	msg := nats.NewMsg(ConvSubject(env.TenantId, env.ConversationId, env.Kind))
	msg.Data = data
	msg.Header.Set(HeaderKind, env.Kind)
	msg.Header.Set(jetstream.MsgIDHeader, MsgID(env.TenantId, env.EventId))
	msg.Header.Set(jetstream.ExpectedStreamHeader, ConvStream)
	b.opts.Propagator.Inject(ctx, propagation.HeaderCarrier(msg.Header))
	return msg, nil
}

// publishMsg stores one prepared message (headers already set).
func (b *Bus) publishMsg(ctx context.Context, msg *nats.Msg) (PubAck, error) {
	pctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	ack, err := b.js.PublishMsg(pctx, msg)
	if err != nil {
		return PubAck{}, fmt.Errorf("eventbus: publish %s: %w", msg.Subject, classify(err))
	}
	return PubAck{Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// publishPipelined publishes msgs asynchronously and waits for every ack.
func (b *Bus) publishPipelined(ctx context.Context, msgs []*nats.Msg) ([]PubAck, error) {
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		// Past the client's limit of unacknowledged publishes, wait for
		// room (backpressure) rather than fail at once.
		f, err := b.js.PublishMsgAsync(m, jetstream.WithStallWait(b.opts.PublishTimeout))
		if err != nil {
			return nil, fmt.Errorf("eventbus: publish %s: %w", m.Subject, classify(err))
		}
		futures[i] = f
	}
	timeout := time.NewTimer(b.opts.PublishTimeout)
	defer timeout.Stop()
	out := make([]PubAck, len(msgs))
	for i, f := range futures {
		select {
		case a := <-f.Ok():
			out[i] = PubAck{Sequence: a.Sequence, Duplicate: a.Duplicate}
		case err := <-f.Err():
			return nil, fmt.Errorf("eventbus: publish %s: %w", msgs[i].Subject, classify(err))
		case <-timeout.C:
			return nil, fmt.Errorf("%w: no acknowledgement within %s", ErrUnavailable, b.opts.PublishTimeout)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: outcome unknown: %v", ErrUnavailable, ctx.Err())
		}
	}
	return out, nil
}

// EncodedMessage builds the NATS message of an envelope already encoded as
// data (an outbox row): the tenant's event id as Nats-Msg-Id (MsgID), the
// expected stream, the kind and the trace context of ctx. With expectEmpty
// JetStream stores it only while its subject holds no message, at any age
// (IsSubjectNotEmpty reports the refusal); the check and the store are one
// step on the server, also in atomic batches.
func (b *Bus) EncodedMessage(ctx context.Context, env *eventv1.Envelope, data []byte, expectEmpty bool) (*nats.Msg, error) {
	if err := Validate(env); err != nil {
		return nil, fmt.Errorf("eventbus: %w", err)
	}
	kind := Kind(env)
	msg := nats.NewMsg(ConvSubject(env.GetTenantId(), env.GetConversationId(), kind))
	msg.Data = data
	msg.Header.Set(HeaderKind, kind)
	msg.Header.Set(jetstream.MsgIDHeader, MsgID(env.GetTenantId(), env.GetEventId()))
	msg.Header.Set(jetstream.ExpectedStreamHeader, ConvStream)
	if expectEmpty {
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	}
	b.opts.Propagator.Inject(ctx, propagation.HeaderCarrier(msg.Header))
	return msg, nil
}

// PublishEach publishes msgs one message each, pipelined, waits up to the
// publish timeout for every acknowledgement and returns each message's
// outcome: one message failing does not fail the others.
func (b *Bus) PublishEach(ctx context.Context, msgs []*nats.Msg) ([]PubAck, []error) {
	acks, errs := make([]PubAck, len(msgs)), make([]error, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		var err error
		if futures[i], err = b.js.PublishMsgAsync(m); err != nil {
			errs[i] = fmt.Errorf("eventbus: publish %s: %w", m.Subject, classify(err))
		}
	}
	timeout := time.NewTimer(b.opts.PublishTimeout)
	defer timeout.Stop()
	expired := false
	for i, f := range futures {
		if f == nil {
			continue
		}
		var (
			ack *jetstream.PubAck
			err error
		)
		if expired {
			select {
			case ack = <-f.Ok():
			case err = <-f.Err():
			default:
				err = fmt.Errorf("%w: no acknowledgement within %s", ErrUnavailable, b.opts.PublishTimeout)
			}
		} else {
			select {
			case ack = <-f.Ok():
			case err = <-f.Err():
			case <-timeout.C:
				expired = true
				err = fmt.Errorf("%w: no acknowledgement within %s", ErrUnavailable, b.opts.PublishTimeout)
			case <-ctx.Done():
				expired = true
				err = fmt.Errorf("%w: outcome unknown: %v", ErrUnavailable, ctx.Err())
			}
		}
		if err != nil {
			errs[i] = classify(err)
			continue
		}
		acks[i] = PubAck{Sequence: ack.Sequence, Duplicate: ack.Duplicate}
	}
	return acks, errs
}

// errCodeAtomicPublishDisabled is JetStream's error for a stream that does
// not allow atomic batches.
const errCodeAtomicPublishDisabled = 10174

// IsSubjectNotEmpty reports JetStream's "wrong last sequence: N" (10071):
// a message built with expectEmpty met a subject that holds a message. The
// replicated-stream variant without a sequence (10164) is not one of them:
// it also answers while another message on the subject is still being
// stored, which may fail; a retry then meets 10071 or succeeds.
func IsSubjectNotEmpty(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// IsAtomicDisabled reports that the stream refused an atomic batch because
// it does not allow them.
func IsAtomicDisabled(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeAtomicPublishDisabled
}
