package eventbus

import (
	"context"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// CommitTogether commits reqs as one batch of g, as if they had been queued
// together, and returns each request's acks and error.
func CommitTogether(ctx context.Context, g *GroupCommitter, reqs ...[]*eventv1.Envelope) ([][]PubAck, []error) {
	batch := make([]*pendingAppend, len(reqs))
	for i, envs := range reqs {
		p := &pendingAppend{ctx: ctx, envs: envs, done: make(chan struct{})}
		for _, env := range envs {
			m, err := g.bus.message(ctx, env, time.Now())
			if err != nil {
				panic(err)
			}
			p.msgs = append(p.msgs, m)
		}
		batch[i] = p
	}
	g.commit(batch)
	acks, errs := make([][]PubAck, len(reqs)), make([]error, len(reqs))
	for i, p := range batch {
		acks[i], errs[i] = p.acks, p.err
	}
	return acks, errs
}

// BatchedSize is what env's message counts against max_payload.
func BatchedSize(b *Bus, env *eventv1.Envelope) int {
	m, err := b.message(context.Background(), env, time.Now())
	if err != nil {
		panic(err)
	}
	return batchedSize(m)
}
