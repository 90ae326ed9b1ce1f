package eventbus_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/testenv"
	"google.golang.org/protobuf/proto"
)

// TestEncodedMessagesExpectingAnEmptySubject: PublishEach stores each
// message on its own; a message expecting an empty subject is refused
// (IsSubjectNotEmpty) once the subject holds one, while a resend of a
// stored id is a duplicate.
func TestEncodedMessagesExpectingAnEmptySubject(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	ctx := context.Background()
	encode := func(conv, id string, expectEmpty bool) *nats.Msg {
		t.Helper()
		env := message(conv, id, "hi")
		data, err := proto.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		m, err := b.EncodedMessage(ctx, env, data, expectEmpty)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	first, second := eventbus.NewEventID(), eventbus.NewEventID()
	acks, errs := b.PublishEach(ctx, []*nats.Msg{encode("c1", first, true), encode("c2", second, false)})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if acks[0].Sequence == 0 || acks[1].Sequence != acks[0].Sequence+1 {
		t.Fatalf("acks %v", acks)
	}
	m, found, err := b.LastOnSubject(ctx, eventbus.ConvSubject("acme", "c1", "message_posted"))
	if err != nil || !found || m.EventID("acme") != first || m.Sequence != acks[0].Sequence {
		t.Fatalf("stored %v %v %v", m, found, err)
	}
	// Another event on c1's subject, expecting it empty: refused; a
	// resend of the first: a duplicate (the id check comes first).
	acks, errs = b.PublishEach(ctx, []*nats.Msg{encode("c1", eventbus.NewEventID(), true), encode("c2", second, false)})
	if !eventbus.IsSubjectNotEmpty(errs[0]) {
		t.Fatalf("want the subject-not-empty refusal, got %v", errs[0])
	}
	if errs[1] != nil || !acks[1].Duplicate {
		t.Fatalf("resend: %v %v", acks[1], errs[1])
	}
	// In an atomic batch the expectation holds as well.
	_, err = b.PublishAtomic(ctx, []*nats.Msg{encode("c3", eventbus.NewEventID(), false), encode("c1", eventbus.NewEventID(), true)})
	if !eventbus.IsSubjectNotEmpty(err) {
		t.Fatalf("atomic batch: want the subject-not-empty refusal, got %v", err)
	}
	if _, found, err := b.LastOnSubject(ctx, eventbus.ConvSubject("acme", "c3", "*")); err != nil || found {
		t.Fatalf("refused batch stored part of it: %v %v", found, err)
	}
}

// TestAtomicBatchOnAStreamWithoutThem: PARLEY_DLQ does not allow atomic
// batches, and the refusal is recognised.
func TestAtomicBatchOnAStreamWithoutThem(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	msgs := []*nats.Msg{
		{Subject: eventbus.DLQSubjectPrefix + ".test.a", Data: []byte("a")},
		{Subject: eventbus.DLQSubjectPrefix + ".test.b", Data: []byte("b")},
	}
	_, err := b.PublishAtomic(context.Background(), msgs)
	if !eventbus.IsAtomicDisabled(err) || eventbus.IsSubjectNotEmpty(err) {
		t.Fatalf("want the atomic-disabled refusal, got %v", err)
	}
}
