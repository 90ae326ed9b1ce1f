package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestSessionsCommands runs `parleyctl sessions ...` against a real
// lifecycle service.
func TestSessionsCommands(t *testing.T) {
	ctx := context.Background()
	n := testenv.NATS(t)
	pgURL := testenv.Postgres(t)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := tenancy.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	store := tenancy.NewStore(pool)
	if err := store.CreateTenant(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	key, _, err := store.CreateAPIKey(ctx, "acme", "ops", []string{grpcx.ScopeAdmin})
	if err != nil {
		t.Fatal(err)
	}
	gport, _ := localinfra.FreePort()
	aport, _ := localinfra.FreePort()
	addr := fmt.Sprintf("127.0.0.1:%d", gport)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- lifecycle.Run(rctx, lifecycle.Config{
			Config: service.Config{NATS: config.NATS{URL: n.URL}, Postgres: config.Postgres{URL: pgURL, MaxConns: 4},
				GRPCAddr: addr, AdminAddr: fmt.Sprintf("127.0.0.1:%d", aport), Telemetry: testenv.Telemetry(t, "lifecycle")},
			SessionTimeout: 1000 * time.Hour,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("lifecycle.Run: %v", err)
		}
	})

	bus, err := eventbus.Connect(ctx, n.URL, "test", eventbus.Options{Producer: "ingest"})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for conv, idle := range map[string]time.Duration{"old": 72 * time.Hour, "new": time.Hour} {
		// Idle by the client's clock and by ingest's (lifecycle counts
		// idleness from the later of the two).
		env := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: conv, OccurredAt: timestamppb.New(now.Add(-idle)),
			RecordedAt: timestamppb.New(now.Add(-idle)),
			Payload:    &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{Channel: eventv1.Channel_CHANNEL_WHATSAPP}}}
		if _, err := bus.Publish(ctx, env); err != nil {
			t.Fatal(err)
		}
	}

	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(args, "--addr", addr, "--api-key", key))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := run("sessions", "stats")
		if err == nil && strings.Contains(out, "active                        2") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never showed both conversations: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := run("sessions", "end-stale", "--hours", "48")
	if err != nil || !strings.Contains(out, "1 conversations ended (idle for more than 48 hours)") {
		t.Fatalf("end-stale: %v\n%s", err, out)
	}
	out, err = run("sessions", "stats")
	for _, want := range []string{"active                        1", "ended                         1", "  stale_timeout", "  whatsapp"} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("stats: want %q: %v\n%s", want, err, out)
		}
	}
	out, err = run("sessions", "show", "old")
	if err != nil || !strings.Contains(out, "END_REASON_STALE_TIMEOUT") { // protojson varies its spacing
		t.Fatalf("show: %v\n%s", err, out)
	}
	if out, err = run("sessions", "timeouts", "set", "--channel", "whatsapp", "--timeout", "24h"); err != nil || !strings.Contains(out, "whatsapp set to 24h0m0s") {
		t.Fatalf("timeouts set: %v\n%s", err, out)
	}
	if out, err = run("sessions", "timeouts", "list"); err != nil || !strings.Contains(out, "tenant   whatsapp  24h0m0s") {
		t.Fatalf("timeouts list: %v\n%s", err, out)
	}
	if _, err := run("sessions", "end-stale", "--hours", "0"); err == nil {
		t.Fatal("--hours 0 accepted")
	}
	if out, err := run("sessions", "end", "nope"); err == nil || !strings.Contains(out, "NotFound") {
		t.Fatalf("end unknown: %v\n%s", err, out)
	}
}
