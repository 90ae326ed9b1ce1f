package query

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/parley-dev/parley/services/reporting/internal/filter"
)

// Bucket is one row of a breakdown.
type Bucket struct {
	Key   string
	Count uint64
}

// Day is one day of a trend.
type Day struct {
	Date                    string
	Conversations, Messages uint64
}

// Dashboard holds the dashboard figures for a filter.
type Dashboard struct {
	Total, Active, Ended, NoOperatorResponse uint64
	Messages                                 uint64
	WithLead, WithGoal                       uint64
	// Costs are per currency, by currency code: amounts in different
	// currencies are never added.
	Costs                               []CurrencyCost
	Tokens                              uint64
	Trend                               []Day
	Countries, Regions, Cities, TopTags []Bucket
	// ActiveNow counts the active conversations matching the active
	// condition (the filter with the range's start dropped).
	ActiveNow uint64
	Funnels   []Funnel
}

// CurrencyCost is the cost in one currency, and the conversations with
// usage in it.
type CurrencyCost struct {
	Currency      string
	CostMicros    int64
	Conversations uint64
}

// Funnel is one flow's funnel.
type Funnel struct {
	FlowID             string
	Started, Completed uint64
	// Steps are step ids by conversations that reached them, most first.
	Steps []Bucket
	Drops []Drop
}

// Drop is a node where conversations left a flow.
type Drop struct {
	StepID, NodeID string
	Conversations  uint64
	// Samples are up to MaxDropSamples conversation ids, newest first.
	Samples []string
}

// Funnel limits.
const (
	MaxFunnels     = 10
	MaxDropSamples = 5
)

// Dashboard computes the figures over the conversations matching w; trend
// is the 30 days up to trendEnd over the conversations matching trendWhere
// (the same filter without its time range), in loc; ActiveNow counts the
// active conversations matching activeWhere (the same filter with only the
// range's end).
func (r *Reader) Dashboard(ctx context.Context, w, trendWhere, activeWhere *filter.Where, trendEnd time.Time, loc *time.Location) (*Dashboard, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	d := &Dashboard{}
	// Three independent scans side by side: the totals and the geography
	// come from one grouped scan, the tags and the trend from their own.
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.totalsAndPlaces(ctx, w, d) })
	g.Go(func() (err error) {
		d.TopTags, err = r.buckets(ctx, `SELECT tag AS k, count() AS n FROM conversations FINAL ARRAY JOIN tags AS tag WHERE `+w.SQL+` GROUP BY k ORDER BY n DESC, k LIMIT 20`, w.Args)
		return err
	})
	g.Go(func() error { return r.trend(ctx, trendWhere, trendEnd, loc, d) })
	g.Go(func() error {
		return r.scanRow(ctx, `SELECT count() FROM conversations FINAL WHERE `+activeWhere.SQL+` AND status = 'active'`, activeWhere.Args, &d.ActiveNow)
	})
	g.Go(func() (err error) {
		d.Funnels, err = r.funnels(ctx, w)
		return err
	})
	g.Go(func() (err error) {
		d.Costs, err = r.costs(ctx, w)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return d, nil
}

// totalsAndPlaces reads the totals and the country and city breakdowns in
// one scan: it groups by (country, city), whose sums are the totals.
func (r *Reader) totalsAndPlaces(ctx context.Context, w *filter.Where, d *Dashboard) error {
	rows, err := r.conn.Query(ctx, `SELECT country, region, city, count(), countIf(status = 'active'), countIf(status = 'ended'), countIf(operator_no_response = 1),
			sum(message_count), countIf(leads > 0), countIf(length(goals) > 0), sum(input_tokens + output_tokens)
		FROM conversations FINAL WHERE `+w.SQL+` GROUP BY country, region, city`, w.Args...)
	if err != nil {
		return fmt.Errorf("query: dashboard: %w", err)
	}
	defer rows.Close()
	countries, regions, cities := map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	for rows.Next() {
		var (
			country, region, city                      string
			n, active, ended, noResp, msgs, lead, goal uint64
			tokens                                     uint64
		)
		if err := rows.Scan(&country, &region, &city, &n, &active, &ended, &noResp, &msgs, &lead, &goal, &tokens); err != nil {
			return fmt.Errorf("query: dashboard row: %w", err)
		}
		d.Total += n
		d.Active += active
		d.Ended += ended
		d.NoOperatorResponse += noResp
		d.Messages += msgs
		d.WithLead += lead
		d.WithGoal += goal
		d.Tokens += tokens
		if country != "" {
			countries[country] += n
		}
		if region != "" {
			regions[country+"/"+region] += n
		}
		if city != "" {
			cities[country+"/"+city] += n
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query: dashboard: %w", err)
	}
	d.Countries, d.Regions, d.Cities = top(countries, 50), top(regions, 50), top(cities, 50)
	return nil
}

// costs sums the usage lines of the conversations matching w per
// currency (a conversation's cost_micros is 0 when its usage is in several
// currencies, so the lines are the only complete record).
func (r *Reader) costs(ctx context.Context, w *filter.Where) ([]CurrencyCost, error) {
	rows, err := r.conn.Query(ctx, `SELECT u_cur, sum(u_cost), uniqExact(conversation_id)
		FROM conversations FINAL ARRAY JOIN usage_currencies AS u_cur, usage_cost_micros AS u_cost
		WHERE `+w.SQL+` GROUP BY u_cur ORDER BY u_cur`, w.Args...)
	if err != nil {
		return nil, fmt.Errorf("query: dashboard costs: %w", err)
	}
	defer rows.Close()
	var out []CurrencyCost
	for rows.Next() {
		var c CurrencyCost
		if err := rows.Scan(&c.Currency, &c.CostMicros, &c.Conversations); err != nil {
			return nil, fmt.Errorf("query: dashboard costs: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query: dashboard costs: %w", err)
	}
	return out, nil
}

// top returns the n largest buckets, largest first, ties by key.
func top(counts map[string]uint64, n int) []Bucket {
	out := make([]Bucket, 0, len(counts))
	for k, c := range counts {
		out = append(out, Bucket{Key: k, Count: c})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// trend counts conversations per day over the 30 calendar days in loc
// ending with trendEnd's day.
func (r *Reader) trend(ctx context.Context, trendWhere *filter.Where, trendEnd time.Time, loc *time.Location, d *Dashboard) error {
	end := trendEnd.In(loc)
	last := time.Date(end.Year(), end.Month(), end.Day(), 0, 0, 0, 0, loc)
	first := last.AddDate(0, 0, -29)
	args := append(append([]any{loc.String()}, trendWhere.Args...), first.UnixMicro(), last.AddDate(0, 0, 1).UnixMicro())
	rows, err := r.conn.Query(ctx, `SELECT toString(toDate(started_at, ?)) AS day, count(), sum(message_count)
		FROM conversations FINAL WHERE `+trendWhere.SQL+` AND started_at_us >= ? AND started_at_us < ?
		GROUP BY day ORDER BY day`, args...)
	if err != nil {
		return fmt.Errorf("query: trend: %w", err)
	}
	defer rows.Close()
	byDay := map[string]Day{}
	for rows.Next() {
		var day Day
		if err := rows.Scan(&day.Date, &day.Conversations, &day.Messages); err != nil {
			return fmt.Errorf("query: trend row: %w", err)
		}
		byDay[day.Date] = day
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query: trend: %w", err)
	}
	for t := first; !t.After(last); t = t.AddDate(0, 0, 1) {
		key := t.Format(time.DateOnly)
		day, ok := byDay[key]
		if !ok {
			day = Day{Date: key}
		}
		d.Trend = append(d.Trend, day)
	}
	return nil
}

func (r *Reader) buckets(ctx context.Context, q string, args []any) ([]Bucket, error) {
	rows, err := r.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("query: breakdown: %w", err)
	}
	defer rows.Close()
	var out []Bucket
	for rows.Next() {
		var b Bucket
		if err := rows.Scan(&b.Key, &b.Count); err != nil {
			return nil, fmt.Errorf("query: breakdown row: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

func (r *Reader) scanRow(ctx context.Context, q string, args []any, dest ...any) error {
	if err := r.conn.QueryRow(ctx, q, args...).Scan(dest...); err != nil {
		return fmt.Errorf("query: dashboard: %w", err)
	}
	return nil
}

// funnels reads the funnel of each of the MaxFunnels flows started most
// often among the conversations matching w. Every count is of distinct
// conversations.
func (r *Reader) funnels(ctx context.Context, w *filter.Where) ([]Funnel, error) {
	started, err := r.buckets(ctx, `SELECT flow AS k, uniqExact(conversation_id) AS n FROM conversations FINAL ARRAY JOIN flows_started AS flow
		WHERE `+w.SQL+` GROUP BY k ORDER BY n DESC, k LIMIT ?`, append(slices.Clone(w.Args), MaxFunnels))
	if err != nil || len(started) == 0 {
		return nil, err
	}
	flows := make([]string, len(started))
	out := make([]Funnel, len(started))
	index := map[string]int{}
	for i, b := range started {
		flows[i], index[b.Key] = b.Key, i
		out[i] = Funnel{FlowID: b.Key, Started: b.Count}
	}
	completed, err := r.buckets(ctx, `SELECT flow AS k, uniqExact(conversation_id) AS n FROM conversations FINAL ARRAY JOIN flows_completed AS flow
		WHERE `+w.SQL+` AND has(?, flow) GROUP BY k`, append(slices.Clone(w.Args), flows))
	if err != nil {
		return nil, err
	}
	for _, b := range completed {
		out[index[b.Key]].Completed = b.Count
	}
	// Steps are "flow/step", drops "flow/step/node".
	steps, err := r.buckets(ctx, `SELECT s AS k, uniqExact(conversation_id) AS n FROM conversations FINAL ARRAY JOIN flow_steps AS s
		WHERE `+w.SQL+` GROUP BY k ORDER BY n DESC, k LIMIT 1000`, w.Args)
	if err != nil {
		return nil, err
	}
	for _, b := range steps {
		if i, step, ok := splitFlow(b.Key, index); ok {
			out[i].Steps = append(out[i].Steps, Bucket{Key: step, Count: b.Count})
		}
	}
	rows, err := r.conn.Query(ctx, `SELECT d, uniqExact(conversation_id) AS n,
			arrayMap(x -> x.2, arraySlice(arrayReverseSort(groupUniqArray((started_at_us, conversation_id))), 1, ?))
		FROM conversations FINAL ARRAY JOIN flow_drops AS d
		WHERE `+w.SQL+` GROUP BY d ORDER BY n DESC, d LIMIT 1000`, append([]any{MaxDropSamples}, w.Args...)...)
	if err != nil {
		return nil, fmt.Errorf("query: funnel drops: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var key string
		var dr Drop
		if err := rows.Scan(&key, &dr.Conversations, &dr.Samples); err != nil {
			return nil, fmt.Errorf("query: funnel drops: %w", err)
		}
		i, rest, ok := splitFlow(key, index)
		if !ok {
			continue
		}
		dr.StepID, dr.NodeID = rest, ""
		if j := strings.LastIndexByte(rest, '/'); j >= 0 {
			dr.StepID, dr.NodeID = rest[:j], rest[j+1:]
		}
		out[i].Drops = append(out[i].Drops, dr)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query: funnel drops: %w", err)
	}
	return out, nil
}

// splitFlow splits "flow/rest" for a flow in index (flow ids may hold
// slashes: the longest known flow wins).
func splitFlow(key string, index map[string]int) (int, string, bool) {
	best, rest, found := 0, "", false
	bestLen := -1
	for flow, i := range index {
		if len(flow) > bestLen && strings.HasPrefix(key, flow+"/") {
			best, rest, found, bestLen = i, key[len(flow)+1:], true, len(flow)
		}
	}
	return best, rest, found
}
