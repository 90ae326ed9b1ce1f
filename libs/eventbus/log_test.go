package eventbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/testenv"
)

func TestLastAndNextOnSubject(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	ctx := context.Background()
	all := eventbus.ConvSubject("acme", "c1", "*")
	if _, found, err := b.LastOnSubject(ctx, all); err != nil || found {
		t.Fatalf("empty log: found %v, err %v", found, err)
	}
	var seqs []uint64
	ids := []string{eventbus.NewEventID(), eventbus.NewEventID(), eventbus.NewEventID()}
	for i, conv := range []string{"c1", "c2", "c1"} {
		ack, err := b.Publish(ctx, message(conv, ids[i], "text"))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	head, err := b.LastSequence(ctx)
	if err != nil || head != seqs[2] {
		t.Fatalf("head %d, %v; want %d", head, err, seqs[2])
	}
	m, found, err := b.LastOnSubject(ctx, all)
	if err != nil || !found {
		t.Fatalf("last: found %v, err %v", found, err)
	}
	if m.Sequence != seqs[2] || m.EventID("acme") != ids[2] || m.Subject != eventbus.ConvSubject("acme", "c1", "message_posted") {
		t.Fatalf("last = seq %d id %s subject %s; want seq %d id %s", m.Sequence, m.EventID("acme"), m.Subject, seqs[2], ids[2])
	}
	env, err := m.Envelope()
	if err != nil || env.GetEventId() != ids[2] || env.GetConversationId() != "c1" {
		t.Fatalf("envelope %v, %v", env, err)
	}
	// The first c1 message at or after the second message's sequence is the third.
	m, found, err = b.NextOnSubject(ctx, seqs[1], all)
	if err != nil || !found || m.Sequence != seqs[2] {
		t.Fatalf("next from %d: seq %d found %v err %v; want %d", seqs[1], m.Sequence, found, err, seqs[2])
	}
	if _, found, err := b.NextOnSubject(ctx, seqs[2]+1, all); err != nil || found {
		t.Fatalf("next past the head: found %v, err %v", found, err)
	}
}

func TestDeleteConsumerIgnoresMissing(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	ctx := context.Background()
	if err := b.DeleteConsumer(ctx, "absent"); err != nil {
		t.Fatalf("missing consumer: %v", err)
	}
	js := b.JetStream()
	if _, err := js.CreateOrUpdateConsumer(ctx, eventbus.ConvStream, jetstream.ConsumerConfig{Durable: "old"}); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteConsumer(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Consumer(ctx, eventbus.ConvStream, "old"); err != jetstream.ErrConsumerNotFound {
		t.Fatalf("consumer still there: %v", err)
	}
}

func TestEnsureKeyValueAllowsAtomicBatches(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	ctx := context.Background()
	if _, found, err := b.KeyValue(ctx, "view"); err != nil || found {
		t.Fatalf("absent bucket: found %v, err %v", found, err)
	}
	cfg := jetstream.KeyValueConfig{Bucket: "view", TTL: time.Hour}
	for range 2 { // the second call updates the bucket, which resets its stream
		if _, err := b.EnsureKeyValue(ctx, cfg, true); err != nil {
			t.Fatal(err)
		}
		st, err := b.JetStream().Stream(ctx, "KV_view")
		if err != nil {
			t.Fatal(err)
		}
		if !st.CachedInfo().Config.AllowAtomicPublish {
			t.Fatal("bucket stream does not allow atomic batches")
		}
	}
	kv, found, err := b.KeyValue(ctx, "view")
	if err != nil || !found || kv.Bucket() != "view" {
		t.Fatalf("bucket: found %v, err %v", found, err)
	}
}
