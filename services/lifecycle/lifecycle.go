// Package lifecycle is the service that owns every conversation's state
// machine: start, end, stale timeout, live-agent takeover and engagement
// classification.
//
// It consumes the conversation event log (partitioned consumer
// "lifecycle", libs/partition: replicas divide the partitions),
// keeps each conversation's state in PostgreSQL with the stream sequence
// applied to it, appends what it derives (conversation_ended,
// engagement_classified, operator_no_response, late_event_recorded) through
// a transactional outbox, keeps the ended-conversations view
// (PARLEY_CONV_ENDED) that ingest reads current, sweeps stale conversations
// and unanswered handoffs, and answers its gRPC API.
package lifecycle

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/leader"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/service"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	lifecyclev1 "github.com/parley-dev/parley/proto/parley/lifecycle/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/api"
	"github.com/parley-dev/parley/services/lifecycle/internal/consumer"
	"github.com/parley-dev/parley/services/lifecycle/internal/outbox"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
	"github.com/parley-dev/parley/services/lifecycle/internal/sweeper"
)

// Config is lifecycle's configuration, read from the environment. Zero
// values of the lifecycle settings mean their defaults, so callers that
// build a Config in code (the local stack, tests) may leave them out.
type Config struct {
	// Config is the header every service shares: PARLEY_LOG_LEVEL,
	// PARLEY_NATS_*, PARLEY_POSTGRES_*, PARLEY_LIFECYCLE_GRPC_ADDR,
	// PARLEY_LIFECYCLE_ADMIN_ADDR, ... (libs/service).
	service.Config
	// SessionTimeout is how long a conversation may go without activity
	// before the sweeper ends it (reason stale_timeout), unless a channel
	// default or a tenant setting (SetSessionTimeout) says otherwise.
	SessionTimeout time.Duration `env:"PARLEY_LIFECYCLE_SESSION_TIMEOUT" envDefault:"24h"`
	// ChannelTimeouts are service-wide session timeouts per channel, e.g.
	// "whatsapp=24h,web_widget=30m" (channel names as in the Channel enum,
	// with or without the CHANNEL_ prefix, any case). Tenant settings take
	// precedence.
	ChannelTimeouts map[string]time.Duration `env:"PARLEY_LIFECYCLE_CHANNEL_TIMEOUTS" envKeyValSeparator:"="`
	// HandoffTimeout is how long a handoff request may wait for an agent to
	// join before lifecycle emits operator_no_response.
	HandoffTimeout time.Duration `env:"PARLEY_LIFECYCLE_HANDOFF_TIMEOUT" envDefault:"5m"`
	// SweepInterval is the time between two sweeps for stale conversations
	// and unanswered handoffs.
	SweepInterval time.Duration `env:"PARLEY_LIFECYCLE_SWEEP_INTERVAL" envDefault:"30s"`
	// EndedViewTTL is how long an ended conversation stays in the
	// PARLEY_CONV_ENDED view that ingest reads to refuse late messages.
	EndedViewTTL time.Duration `env:"PARLEY_LIFECYCLE_ENDED_VIEW_TTL" envDefault:"168h"`
	// ConsumerBatch is the most events applied in one PostgreSQL
	// transaction.
	ConsumerBatch int `env:"PARLEY_LIFECYCLE_CONSUMER_BATCH" envDefault:"500"`
	// ConsumerPerPartition switches off rounds: each partition's events are
	// then applied in their own transaction instead of those of all owned
	// partitions read together in one.
	ConsumerPerPartition bool `env:"PARLEY_LIFECYCLE_CONSUMER_PER_PARTITION" envDefault:"false"`
	// Partitions is the number of partitions the log is divided into among
	// replicas; fixed per deployment (changing it is a migration, see
	// docs/operations.md).
	Partitions int `env:"PARLEY_PARTITIONS" envDefault:"16"`
	// LeaseTTL is how long a replica's partition leases live without a
	// heartbeat: a dead replica's partitions move within about this long.
	LeaseTTL time.Duration `env:"PARLEY_PARTITION_LEASE_TTL" envDefault:"5s"`
	// Member names this replica among the consumer's members (default:
	// host name and a random suffix).
	Member string `env:"PARLEY_PARTITION_MEMBER"`
	// Wrap, when set, wraps the consumer's handler (fault injection in
	// tests).
	Wrap func(partition.Handler) partition.Handler `env:"-"`
	// KeepLeases, when set, stops without releasing the partition leases,
	// as a crashed replica does (tests).
	KeepLeases bool `env:"-"`
	// Clock is the time source of sweeps and commands (tests); time.Now
	// when nil.
	Clock func() time.Time `env:"-"`
}

func (c *Config) defaults() {
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 24 * time.Hour
	}
	if c.HandoffTimeout <= 0 {
		c.HandoffTimeout = 5 * time.Minute
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 30 * time.Second
	}
	if c.EndedViewTTL <= 0 {
		c.EndedViewTTL = convview.DefaultTTL
	}
	if c.ConsumerBatch <= 0 {
		c.ConsumerBatch = 500
	}
	if c.Partitions <= 0 {
		c.Partitions = partition.DefaultPartitions
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = partition.DefaultLeaseTTL
	}
	if c.Member == "" {
		host, _ := os.Hostname()
		c.Member = host + "-" + eventbus.NewEventID()
	}
	if c.NATS.DuplicateWindow <= 0 {
		c.NATS.DuplicateWindow = 2 * time.Minute
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
}

// channelDefaults validates ChannelTimeouts and keys them by enum name.
func (c *Config) channelDefaults() (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for name, d := range c.ChannelTimeouts {
		n := strings.ToUpper(strings.TrimSpace(name))
		if !strings.HasPrefix(n, "CHANNEL_") {
			n = "CHANNEL_" + n
		}
		v, ok := eventv1.Channel_value[n]
		if !ok || v == 0 {
			return nil, fmt.Errorf("lifecycle: PARLEY_LIFECYCLE_CHANNEL_TIMEOUTS: unknown channel %q", name)
		}
		if d < time.Second {
			return nil, fmt.Errorf("lifecycle: PARLEY_LIFECYCLE_CHANNEL_TIMEOUTS: %s: timeout must be at least 1s", name)
		}
		out[n] = d
	}
	return out, nil
}

// Run serves lifecycle until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	channelDefaults, err := cfg.channelDefaults()
	if err != nil {
		return err
	}
	b, err := service.Start(ctx, service.Options{
		Name: "lifecycle", Config: cfg.Config, Scopes: Scopes(),
	})
	if err != nil {
		return err
	}
	fail := func(err error) error { b.Close(); return err }
	if err := store.Migrate(ctx, b.PG, b.Log); err != nil {
		return fail(err)
	}
	if err := partition.Migrate(ctx, b.PG); err != nil {
		return fail(err)
	}
	st := store.New(b.PG, cfg.SessionTimeout)
	if changed, err := st.SyncDefaults(ctx, channelDefaults); err != nil {
		return fail(err)
	} else if changed {
		b.Log.Info("session timeouts changed; active conversations rescheduled", "default", cfg.SessionTimeout, "channels", channelDefaults)
	}
	kv, err := convview.Ensure(ctx, b.Bus, cfg.EndedViewTTL, cfg.NATS.Replicas)
	if err != nil {
		return fail(err)
	}
	relay := outbox.New(outbox.Config{
		Store: st, Bus: b.Bus, View: convview.NewWriter(kv, b.Bus.PublishAtomic), DuplicateWindow: cfg.NATS.DuplicateWindow,
		ViewTTL: cfg.EndedViewTTL, Clock: cfg.Clock, Log: b.Log, Meter: b.Tel.Meter("github.com/parley-dev/parley/services/lifecycle"),
		Tracer: b.Tel.Tracer("github.com/parley-dev/parley/services/lifecycle"),
	})
	cons := consumer.New(consumer.Config{Store: st, Bus: b.Bus, Relay: relay, Pool: b.PG, Partitions: cfg.Partitions,
		BatchSize: cfg.ConsumerBatch, Clock: cfg.Clock, Log: b.Log})
	handle, round := partition.Handlers(cons.Handle, cons.HandleRound, cfg.ConsumerPerPartition, cfg.Wrap)
	pc := partition.NewConsumer(partition.Config{
		Bus: b.Bus, Pool: b.PG, BatchSize: cfg.ConsumerBatch, Log: b.Log, Meter: b.Tel.Meter("github.com/parley-dev/parley/libs/partition"),
		Coordinator: partition.NewCoordinator(b.PG, consumer.Durable, cfg.Member, cfg.Partitions, cfg.LeaseTTL),
		Round:       round,
	})
	b.AddCheck("consumer", pc.Ready)
	sw := sweeper.New(sweeper.Config{
		Store: st, Relay: relay, CaughtUp: cons.CaughtUp, HandoffTimeout: cfg.HandoffTimeout,
		Interval: cfg.SweepInterval, Clock: cfg.Clock, Log: b.Log,
	})
	lifecyclev1.RegisterLifecycleServiceServer(b.GRPC, api.New(api.Config{
		Store: st, Bus: b.Bus, Relay: relay, Consumer: cons, Sweeper: sw,
		DefaultTimeout: cfg.SessionTimeout, Clock: cfg.Clock, Log: b.Log,
	}))
	relay.Kick() // publish what a previous run left in the outbox
	// The relay outlives the consumer: on shutdown the consumer finishes and
	// commits the batch in hand, then the relay publishes what it derived
	// and stops (what it cannot publish in time stays for the next start).
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	consume := func(ctx context.Context) error {
		defer stopRelay()
		if err := cons.Prepare(ctx); err != nil {
			return err
		}
		// Every replica applies the partitions it holds a lease on; one
		// elected replica sweeps (the sweep reads all conversations, under
		// row locks shared with the consumers).
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error {
			return leader.Run(gctx, b.PG, leader.Key("lifecycle sweeper"), 2*time.Second, "lifecycle sweeper", b.Log, sw.Run)
		})
		g.Go(func() error { return pc.Run(gctx, handle) })
		err := g.Wait()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout(cfg.Server))
		defer cancel()
		if cfg.KeepLeases {
			// Leases expire after their TTL.
		} else if lerr := pc.Leave(dctx); lerr != nil {
			b.Log.WarnContext(dctx, "partition leases not released; they move after their TTL", "err", lerr)
		}
		if derr := relay.Drain(dctx); derr != nil {
			b.Log.WarnContext(dctx, "outbox: not everything published before stopping; the next start publishes the rest", "err", derr)
		}
		return err
	}
	return b.Run(ctx, consume, func(context.Context) error { return relay.Run(relayCtx, time.Second) })
}

func shutdownTimeout(s config.Server) time.Duration {
	if s.ShutdownTimeout > 0 {
		return s.ShutdownTimeout
	}
	return 20 * time.Second
}

// Scopes lists the API-key scope each method needs: reads need "read",
// everything else "admin".
func Scopes() map[string]string { return api.Scopes() }
