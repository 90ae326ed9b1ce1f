package rebuild

import (
	"context"
	"errors"
	"sync"
)

// Loop runs the live projector's consume function and can pause it: Pause
// stops the consumer (it finishes and acknowledges its batch) and Resume
// starts it again.
type Loop struct {
	consume func(ctx context.Context) error
	mu      sync.Mutex
	cancel  context.CancelFunc
	stopped chan struct{}
	resume  chan struct{}
}

// NewLoop wraps a consume function (e.g. Bus.Consume with the projector).
func NewLoop(consume func(ctx context.Context) error) *Loop {
	return &Loop{consume: consume, resume: make(chan struct{}, 1)}
}

// Run consumes until ctx ends, sitting out pauses.
func (l *Loop) Run(ctx context.Context) error {
	for {
		cctx, cancel := context.WithCancel(ctx)
		stopped := make(chan struct{})
		l.mu.Lock()
		l.cancel, l.stopped = cancel, stopped
		l.mu.Unlock()
		err := l.consume(cctx)
		cancel()
		close(stopped)
		if ctx.Err() != nil {
			l.mu.Lock()
			l.cancel, l.stopped = nil, nil
			l.mu.Unlock()
			return nil
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.resume:
		}
	}
}

// Active reports whether Run is running in this process (paused or not):
// false on a replica standing by while another one projects.
func (l *Loop) Active() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cancel != nil
}

// Pause stops the consumer and waits until its last batch is acknowledged.
func (l *Loop) Pause(ctx context.Context) error {
	l.mu.Lock()
	cancel, stopped := l.cancel, l.stopped
	l.mu.Unlock()
	if cancel == nil {
		return errors.New("rebuild: live projector is not running")
	}
	cancel()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Resume restarts the consumer after Pause.
func (l *Loop) Resume() {
	select {
	case l.resume <- struct{}{}:
	default:
	}
}
