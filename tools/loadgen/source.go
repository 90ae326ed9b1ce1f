package loadgen

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/parley-dev/parley/tools/loadgen/scenario"
	"github.com/parley-dev/parley/tools/loadgen/sgd"
)

// source hands out conversations to workers until it runs out. Generation
// and conversion run in the calling worker, outside any lock.
type source struct {
	limit int // 0: unlimited

	// Generated mode.
	gen  *scenario.Generator
	next atomic.Int64

	// Replay mode.
	mu      sync.Mutex
	corpus  *sgd.Corpus
	opts    sgd.Options
	index   int
	done    bool
	err     error
	skipped atomic.Int64
}

func newSource(cfg Config) (*source, error) {
	tenants := cfg.tenants()
	if cfg.SGDDir != "" {
		corpus, err := sgd.Open(cfg.SGDDir)
		if err != nil {
			return nil, err
		}
		return &source{limit: cfg.Conversations, corpus: corpus,
			opts: sgd.Options{Tenants: tenants, Seed: cfg.Seed, RunID: cfg.RunID, Start: cfg.Start, Spread: cfg.Spread}}, nil
	}
	g, err := scenario.New(scenario.Options{Tenants: tenants, Bots: cfg.Bots, Seed: cfg.Seed, RunID: cfg.RunID,
		Start: cfg.Start, Spread: cfg.Spread, CloseFraction: cfg.CloseFraction})
	if err != nil {
		return nil, err
	}
	return &source{limit: cfg.Conversations, gen: g}, nil
}

// take returns the next conversation, or nil when there are no more.
func (s *source) take() *scenario.Conversation {
	if s.gen != nil {
		i := int(s.next.Add(1) - 1)
		if s.limit > 0 && i >= s.limit {
			return nil
		}
		c := s.gen.Conversation(i)
		return &c
	}
	for {
		d, i, ok := s.dialogue()
		if !ok {
			return nil
		}
		c, err := sgd.Convert(d, i, s.opts)
		if err != nil {
			s.skipped.Add(1) // a dialogue without turns: nothing to send
			continue
		}
		return &c
	}
}

// dialogue reads the next dialogue of the corpus and its index.
func (s *source) dialogue() (sgd.Dialogue, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || (s.limit > 0 && s.index >= s.limit) {
		return sgd.Dialogue{}, 0, false
	}
	d, err := s.corpus.Next()
	if err != nil {
		s.done = true
		if !errors.Is(err, io.EOF) {
			s.err = err
		}
		return sgd.Dialogue{}, 0, false
	}
	s.index++
	return d, s.index - 1, true
}

func (s *source) error() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
