// Package loadgen sends realistic conversation traffic to Parley's ingest
// API over gRPC and records what was acknowledged, so that a later check
// (package verify, `parleyctl verify`) can prove that nothing was lost or
// stored twice.
//
// Traffic is either generated (package scenario: many tenants and bots,
// channels, flows that complete or drop off, unidentified responses,
// takeovers, goals, leads, costs) or replayed from the Schema-Guided
// Dialogue corpus (package sgd). Each worker keeps a window of
// conversations in flight and interleaves them; a conversation's next
// events are sent only after its previous ones were acknowledged, or in the
// same request (or stream) right after them, in order. Every event carries a
// client_event_id, so a request that failed with Unavailable,
// ResourceExhausted or DeadlineExceeded is retried as it was, and whatever
// had been stored comes back as a duplicate instead of being stored twice.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

// Modes of sending.
const (
	// ModeBatch sends Append requests of up to BatchSize events that mix
	// conversations of one tenant.
	ModeBatch = "batch"
	// ModeStream sends AppendStream calls of several such batches each.
	ModeStream = "stream"
	// ModeSingle sends one event per call: PostMessage, StartConversation,
	// RecordUsage and CloseConversation for their kinds, Append otherwise.
	ModeSingle = "single"
)

// MaxBatchSize is ingest's default limit on events per request.
const MaxBatchSize = 1000

// preflightTimeout bounds the wait for a first connection to ingest.
const preflightTimeout = 5 * time.Second

// Config configures a run.
type Config struct {
	// IngestAddr is the gRPC address of ingest.
	IngestAddr string
	// Keys maps tenant ids to API keys with the ingest scope.
	Keys map[string]string
	// Conversations is how many conversations to generate, or the most
	// dialogues to replay from the corpus (all when 0). Generated mode
	// defaults to 1000 unless Duration is set (then: until Duration).
	Conversations int
	// Rate is the target rate in events per second across all workers;
	// 0 sends as fast as possible.
	Rate float64
	// Duration stops the run after this long (0: when every conversation
	// was sent). Conversations in flight are left partly sent.
	Duration time.Duration
	// Concurrency is the number of concurrent senders (default 8).
	Concurrency int
	// Mode is ModeBatch (default), ModeStream or ModeSingle.
	Mode string
	// BatchSize is the most events per request (default 100, at most 1000).
	BatchSize int
	// Seed makes scenarios deterministic.
	Seed int64
	// Bots per tenant in generated mode (default 3).
	Bots int
	// SGDDir, when set, replays this Schema-Guided Dialogue corpus instead
	// of generating conversations.
	SGDDir string
	// CloseFraction is the share of generated conversations the client
	// closes with conversation_closed (default 0.7; negative: none). Replayed
	// dialogues are closed when the user says goodbye.
	CloseFraction float64
	// Start is the occurred_at of the first conversation (default now −
	// Spread). Start+Spread must not lie in the future.
	Start time.Time
	// Spread is the window over which conversations start (default 1h);
	// turns are seconds apart, and every event falls inside the window.
	Spread time.Duration
	// RunID makes conversation ids unique per run: generated ones are
	// "<RunID>-<n>", replayed ones "sgd-<RunID>-<dialogue_id>". Default:
	// "lg-<base-36 start time in ms>" (generated) or the base-36 time
	// (replay), so repeated runs against one stack never collide.
	RunID string
	// AckLog, when set, receives one JSON line (an Ack) per acknowledged
	// event, duplicates included.
	AckLog io.Writer
	// Progress, when set, is called about once a second with the counts so
	// far.
	Progress func(Stats)
	// OnError, when set, is told about every call that failed for good
	// (its events are counted in Stats.Errors). It may be called
	// concurrently.
	OnError func(error)
}

// Stats are a run's counts.
type Stats struct {
	// Conversations whose every event was acknowledged.
	Conversations uint64
	// Events sent (each once, however often it was retried).
	Events uint64
	// Acked events, duplicates included.
	Acked uint64
	// Duplicates are acknowledgements of events that had already been
	// stored (retries).
	Duplicates uint64
	// Errors are events whose request failed for good; their
	// conversations were abandoned.
	Errors uint64
	// Messages and Closes count acknowledged message_posted and
	// conversation_closed events.
	Messages, Closes uint64
	// Elapsed is the time since the run started.
	Elapsed time.Duration
	// AckP50 and AckP99 are quantiles of the time a call took until it was
	// acknowledged (an Append, a whole AppendStream, or a single call).
	AckP50, AckP99 time.Duration
}

// EventsPerSecond is the acknowledged events per second of elapsed time.
func (s Stats) EventsPerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Acked) / s.Elapsed.Seconds()
}

// String is a one-line summary, as the CLI prints it every second.
func (s Stats) String() string {
	return fmt.Sprintf("%6.1fs  conversations %d  events sent %d acked %d (dup %d)  %.0f events/s  ack p50 %s p99 %s  errors %d",
		s.Elapsed.Seconds(), s.Conversations, s.Events, s.Acked, s.Duplicates, s.EventsPerSecond(),
		s.AckP50.Round(10*time.Microsecond), s.AckP99.Round(10*time.Microsecond), s.Errors)
}

// counters are the live Stats.
type counters struct {
	conversations, events, acked, duplicates, errors, messages, closes atomic.Uint64
}

func (c *Config) fill(now time.Time) error {
	if c.IngestAddr == "" {
		return errors.New("loadgen: IngestAddr is required")
	}
	if len(c.Keys) == 0 {
		return errors.New("loadgen: at least one tenant key is required")
	}
	for t, k := range c.Keys {
		if !eventbus.ValidTenantID(t) {
			return fmt.Errorf("loadgen: tenant id %q is not valid", t)
		}
		if k == "" {
			return fmt.Errorf("loadgen: tenant %s has no key", t)
		}
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	switch c.Mode {
	case "":
		c.Mode = ModeBatch
	case ModeBatch, ModeStream, ModeSingle:
	default:
		return fmt.Errorf("loadgen: mode %q: want batch, stream or single", c.Mode)
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.BatchSize > MaxBatchSize {
		return fmt.Errorf("loadgen: batch size %d: at most %d", c.BatchSize, MaxBatchSize)
	}
	if c.Mode == ModeSingle {
		c.BatchSize = 1
	}
	if c.Rate < 0 || c.Conversations < 0 || c.Duration < 0 || c.Spread < 0 {
		return errors.New("loadgen: rate, conversations, duration and spread must not be negative")
	}
	if c.Spread == 0 {
		c.Spread = time.Hour
	}
	if c.Start.IsZero() {
		c.Start = now.Add(-c.Spread)
	}
	if c.Start.Add(c.Spread).After(now) {
		return fmt.Errorf("loadgen: start %s + spread %s lies in the future", c.Start.Format(time.RFC3339), c.Spread)
	}
	switch {
	case c.CloseFraction == 0:
		c.CloseFraction = 0.7
	case c.CloseFraction < 0:
		c.CloseFraction = 0
	case c.CloseFraction > 1:
		return fmt.Errorf("loadgen: close fraction %g: at most 1", c.CloseFraction)
	}
	if c.SGDDir == "" && c.Conversations == 0 && c.Duration == 0 {
		c.Conversations = 1000
	}
	if c.RunID == "" {
		c.RunID = strconv.FormatInt(now.UnixMilli(), 36)
		if c.SGDDir == "" {
			c.RunID = "lg-" + c.RunID
		}
	}
	return nil
}

// tenants returns the tenant ids in a stable order.
func (c *Config) tenants() []string {
	ts := make([]string, 0, len(c.Keys))
	for t := range c.Keys {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// Run sends the configured traffic and returns the counts. It returns early
// with an error when ingest refuses the keys (Unauthenticated,
// PermissionDenied) or stays unavailable, and with ctx's error when ctx is
// cancelled; requests in flight are finished (and acknowledgements logged)
// before it returns.
func Run(ctx context.Context, cfg Config) (Stats, error) {
	start := time.Now()
	if err := cfg.fill(start); err != nil {
		return Stats{}, err
	}
	src, err := newSource(cfg)
	if err != nil {
		return Stats{}, err
	}
	conn, err := grpc.NewClient(cfg.IngestAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20), grpc.MaxCallRecvMsgSize(8<<20)))
	if err != nil {
		return Stats{}, fmt.Errorf("loadgen: %w", err)
	}
	defer conn.Close()
	if err := waitReady(ctx, conn, cfg.IngestAddr); err != nil {
		return Stats{}, err
	}
	r := &runner{
		cfg:    cfg,
		client: ingestv1.NewIngestServiceClient(conn),
		src:    src,
		acks:   newAckWriter(cfg.AckLog),
		lat:    newHistogram(),
		start:  start,
	}
	if cfg.Rate > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(cfg.Rate), max(cfg.BatchSize, 1))
	}
	// stopCtx ends on Duration or when ctx is cancelled: no new requests
	// then. Requests in flight run on their own context to completion.
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		stopCtx, cancel = context.WithTimeout(stopCtx, cfg.Duration)
		defer cancel()
	}
	r.stopCtx = stopCtx

	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress != nil {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					cfg.Progress(r.stats())
				case <-progressDone:
					return
				}
			}
		}()
	}

	var wg sync.WaitGroup
	errc := make(chan error, cfg.Concurrency)
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := newWorker(r, w).run(ctx); err != nil {
				errc <- err
				stop() // a fatal error stops every worker
			}
		}()
	}
	wg.Wait()
	close(progressDone)
	progressWG.Wait()
	close(errc)

	st := r.stats()
	errs := []error{<-errc, r.src.error(), r.acks.flush()} // the first fatal error is enough
	if err := errors.Join(errs...); err != nil {
		return st, err
	}
	return st, ctx.Err()
}

// waitReady fails fast when ingest cannot be reached at all, instead of
// retrying every call for the whole retry budget.
func waitReady(ctx context.Context, conn *grpc.ClientConn, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			return fmt.Errorf("loadgen: ingest at %s is not reachable (connection %s)", addr, s)
		}
	}
	return nil
}
