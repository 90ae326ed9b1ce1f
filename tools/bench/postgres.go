package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/pgstore"
)

// The plain PostgreSQL design a team would otherwise build: one row per
// message inserted through pgx, a conversations row kept current in the same
// transaction, and the dashboard computed with SQL.
const plainSchema = `
DROP TABLE IF EXISTS plain_messages, plain_conversations;
CREATE TABLE plain_conversations (
    tenant_id text NOT NULL, conversation_id text NOT NULL, started_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'active', channel text NOT NULL DEFAULT '', country text NOT NULL DEFAULT '',
    message_count int NOT NULL DEFAULT 0, has_lead bool NOT NULL DEFAULT false, has_goal bool NOT NULL DEFAULT false,
    cost_micros bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, conversation_id));
CREATE INDEX ON plain_conversations (tenant_id, started_at);
CREATE TABLE plain_messages (
    id bigserial PRIMARY KEY, tenant_id text NOT NULL, conversation_id text NOT NULL,
    role text NOT NULL, text text NOT NULL, occurred_at timestamptz NOT NULL);
CREATE INDEX ON plain_messages (tenant_id, conversation_id, occurred_at);`

// measurePostgresBaseline reports the plain design's ingest rate and its
// dashboard latency at the first query size.
func measurePostgresBaseline(ctx context.Context, o Options, s *suite, rep *Report, logf logFunc) error {
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: s.PostgresURL, MaxConns: 20})
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, plainSchema); err != nil {
		return fmt.Errorf("bench: plain schema: %w", err)
	}
	defer func() {
		_, _ = pool.Exec(context.Background(), `DROP TABLE IF EXISTS plain_messages, plain_conversations`)
	}()

	logf("PostgreSQL baseline: one row per message, 16 writers")
	text := strings.Repeat("where is my order? ", 15)
	var n atomic.Int64
	ictx, cancel := context.WithTimeout(ctx, o.Phase/2)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ictx.Err() == nil; i++ {
				conv := fmt.Sprintf("w%d-c%d", w, i/10)
				err := pgx.BeginFunc(ictx, pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ictx, `INSERT INTO plain_messages (tenant_id, conversation_id, role, text, occurred_at) VALUES ($1, $2, 'visitor', $3, now())`, "bench", conv, text); err != nil {
						return err
					}
					_, err := tx.Exec(ictx, `INSERT INTO plain_conversations (tenant_id, conversation_id, started_at, message_count) VALUES ($1, $2, now(), 1)
						ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET message_count = plain_conversations.message_count + 1`, "bench", conv)
					return err
				})
				if err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	rate := float64(n.Load()) / time.Since(start).Seconds()
	rep.add(Result{Group: "PostgreSQL baseline", Name: "plain design: messages inserted (one transaction per message, 16 writers)", Value: rate, Unit: "messages/s"})

	size := o.Sizes[0]
	logf("PostgreSQL baseline: loading %d conversations for the dashboard", size)
	if _, err := pool.Exec(ctx, `TRUNCATE plain_messages, plain_conversations`); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, fmt.Sprintf(`INSERT INTO plain_conversations (tenant_id, conversation_id, started_at, status, channel, country, message_count, has_lead, has_goal, cost_micros)
		SELECT 'bench', 'q-' || g, now() - (g * interval '1 second' * %[1]f), CASE WHEN g %% 3 = 0 THEN 'active' ELSE 'ended' END,
			(ARRAY['web_widget','whatsapp','telegram','api'])[g %% 4 + 1], (ARRAY['DE','FR','US','GB','BR'])[g %% 5 + 1],
			g %% 12 + 1, g %% 13 = 0, g %% 11 = 0, g %% 1000
		FROM generate_series(0, %[2]d - 1) AS g`, float64(60*24*3600)/float64(size), size)); err != nil {
		return fmt.Errorf("bench: plain load: %w", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO plain_messages (tenant_id, conversation_id, role, text, occurred_at)
		SELECT c.tenant_id, c.conversation_id, 'visitor', 'where is my order', c.started_at + (m * interval '5 seconds')
		FROM plain_conversations c, generate_series(1, 6) AS m`); err != nil {
		return fmt.Errorf("bench: plain messages: %w", err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE plain_messages; ANALYZE plain_conversations`); err != nil {
		return err
	}
	dash := func(since string) func() error {
		return func() error {
			var total, active, ended, msgs, leads, goals, cost int64
			if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'active'), count(*) FILTER (WHERE status = 'ended'),
					coalesce(sum(m.n), 0), count(*) FILTER (WHERE has_lead), count(*) FILTER (WHERE has_goal), coalesce(sum(cost_micros), 0)
				FROM plain_conversations c LEFT JOIN LATERAL (SELECT count(*) AS n FROM plain_messages m WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.conversation_id) m ON true
				WHERE c.tenant_id = 'bench' AND c.started_at >= `+since).Scan(&total, &active, &ended, &msgs, &leads, &goals, &cost); err != nil {
				return err
			}
			rows, err := pool.Query(ctx, `SELECT date_trunc('day', started_at), count(*) FROM plain_conversations WHERE tenant_id = 'bench' AND started_at >= now() - interval '30 days' GROUP BY 1 ORDER BY 1`)
			if err != nil {
				return err
			}
			rows.Close()
			rows, err = pool.Query(ctx, `SELECT country, count(*) FROM plain_conversations WHERE tenant_id = 'bench' AND started_at >= `+since+` GROUP BY 1 ORDER BY 2 DESC LIMIT 50`)
			if err != nil {
				return err
			}
			rows.Close()
			return nil
		}
	}
	label := humanCount(size)
	for _, c := range []struct{ name, since string }{{"last 7 days", "now() - interval '7 days'"}, {"all time", "'-infinity'"}} {
		var ds []time.Duration
		for range 10 {
			st := time.Now()
			if err := dash(c.since)(); err != nil {
				return fmt.Errorf("bench: plain dashboard: %w", err)
			}
			ds = append(ds, time.Since(st))
		}
		rep.add(Result{Group: "PostgreSQL baseline", Name: fmt.Sprintf("plain design: dashboard at %s conversations, %s, p95", label, c.name), Value: ms(pct(ds, 0.95)), Unit: "ms"})
	}
	return nil
}

// compareToPostgres fills in the ratios against the plain design.
func compareToPostgres(rep *Report) {
	plainIngest := find(rep, "plain design: messages inserted (one transaction per message, 16 writers)")
	if ing := find(rep, "sustained: messages acknowledged and projected"); ing != nil && plainIngest != nil && plainIngest.Value > 0 {
		rep.add(Result{Group: "Against the PostgreSQL baseline", Name: "sustained messages/s, Parley ÷ plain design", Value: ing.Value / plainIngest.Value, Unit: "×",
			Target: "≥ 2×", Met: met(ing.Value/plainIngest.Value >= 2)})
	}
	for _, w := range []string{"last 7 days", "all time"} {
		var plain, parley *Result
		for i := range rep.Results {
			r := &rep.Results[i]
			if strings.HasPrefix(r.Name, "plain design: dashboard at") && strings.Contains(r.Name, w) {
				plain = r
			}
			if strings.HasPrefix(r.Group, "Queries at") && r.Name == "GetDashboard, "+w+", p95" && parley == nil {
				parley = r
			}
		}
		if plain != nil && parley != nil && parley.Value > 0 {
			rep.add(Result{Group: "Against the PostgreSQL baseline", Name: "dashboard p95 (" + w + ", " + strings.TrimPrefix(parley.Group, "Queries at ") + "), plain design ÷ Parley", Value: plain.Value / parley.Value, Unit: "×",
				Target: "≥ 20×", Met: met(plain.Value/parley.Value >= 20)})
		}
	}
}
