package stack

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/natsauth"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/tools/loadgen"
	"github.com/parley-dev/parley/tools/verify"
)

// TestReplicasSurviveKill runs two replicas of every service as processes:
// both replicas of each consumer hold partitions, and after one replica of
// lifecycle, tagging and reporting is killed with SIGKILL, everything
// acknowledged before and after is projected exactly once (tools/verify on
// the ack log).
func TestReplicasSurviveKill(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the whole stack")
	}
	bin := buildParley(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := Start(ctx, Options{Dir: stackDir(t), FreePorts: true, DemoTenant: "demo", BinDir: bin, LogOutput: testLog{t}, Replicas: 2})
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	defer st.Stop()
	if n := len(st.PIDs()); n != 2*len(Services) {
		t.Fatalf("%d service processes (%v), want %d", n, st.PIDs(), 2*len(Services))
	}
	// Consumer group of each partitioned service.
	groups := map[string]string{"lifecycle": "lifecycle", "tagging": "tagging", "reporting": "reporting-projector"}
	for svc, group := range groups {
		waitOwners(t, ctx, st, group, svc+"-1")
	}

	var acks bytes.Buffer
	var closes uint64
	load := func(addr, runID string, seed int64) {
		t.Helper()
		cfg := loadgen.Config{Mode: loadgen.ModeBatch, Conversations: 30, BatchSize: 20, Concurrency: 2, Seed: seed, RunID: runID,
			IngestAddr: addr, Keys: map[string]string{"demo": st.DemoKey}, AckLog: &acks}
		s, err := loadgen.Run(ctx, cfg)
		if err != nil || s.Errors != 0 || s.Acked != s.Events {
			t.Fatalf("load %s: %+v %v", runID, s, err)
		}
		closes += s.Closes
	}
	// Both ingest replicas take traffic.
	load(st.GRPCAddr("ingest"), "r0", 21)
	load(replica(t, st, "ingest-1").grpcAddr(), "r1", 22)

	pids := st.PIDs()
	for svc := range groups {
		if err := syscall.Kill(pids[svc+"-1"], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	load(st.GRPCAddr("ingest"), "r2", 23)

	list, err := loadgen.ReadAcks(bytes.NewReader(acks.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := verify.Run(ctx, verify.Config{
		Acks:        list,
		NATS:        config.NATS{URL: st.NATSURL, User: natsauth.Operator, Password: localinfra.NATSLocalPasswords()[natsauth.Operator]},
		PostgresURL: st.PostgresURL, ClickHouse: config.ClickHouse{Addr: st.ClickHouseAddr, Database: "parley"},
		Settle: 45 * time.Second,
	})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !rep.OK() || rep.Lost != 0 || rep.Duplicated != 0 || uint64(rep.EndedOnce) != closes {
		var out bytes.Buffer
		rep.Write(&out)
		t.Fatalf("after killing a replica of each consumer: ok=%v lost %d duplicated %d ended once %d (closes %d)\n%s",
			rep.OK(), rep.Lost, rep.Duplicated, rep.EndedOnce, closes, out.String())
	}
	if r := st.Restarts(); r["lifecycle-1"] != 1 || r["tagging-1"] != 1 || r["reporting-1"] != 1 || r["lifecycle"] != 0 {
		last := map[string]string{}
		for _, rep := range st.Replicas() {
			last[rep.Name()] = lastLine(filepath.Join(st.Dir, "log", rep.Name()+".log"))
		}
		t.Fatalf("restarts = %v, want each killed replica restarted once, no other; last log lines: %v", r, last)
	}
}

// replica returns the stack's replica called name.
func replica(t *testing.T, st *Stack, name string) Replica {
	t.Helper()
	for _, r := range st.Replicas() {
		if r.Name() == name {
			return r
		}
	}
	t.Fatalf("no replica %s", name)
	return Replica{}
}

// waitOwners waits until two members hold live partition leases of group,
// one of them member.
func waitOwners(t *testing.T, ctx context.Context, st *Stack, group, member string) {
	t.Helper()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: st.PostgresURL})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var owners []string
		err := pool.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT owner), '{}') FROM partition_leases WHERE consumer = $1 AND expires_at > clock_timestamp()`, group).Scan(&owners)
		if err == nil && len(owners) == 2 && slices.Contains(owners, member) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: partitions held by %v (%v), want two members, one %s", group, owners, err, member)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
