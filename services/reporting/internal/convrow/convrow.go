// Package convrow declares the ClickHouse conversations row once: one
// ordered list of columns (name, ClickHouse type, accessor). The projector's
// insert, the detail reader's select list and scan are derived from it; tests
// check the migrations' table and docs/clickhouse.md against it.
//
// Adding a column: add a ClickHouse migration that appends it (ALTER TABLE
// ... ADD COLUMN, so it lands at the end), append it here, and add its row to
// the table in docs/clickhouse.md.
package convrow

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/convstate"
)

// Column is one column of the conversations row.
type Column struct {
	Name string
	// Type is the ClickHouse type, as system.columns spells it.
	Type   string
	value  func(*convstate.State) any
	buffer func() buffer
	dest   func() (any, func(*convstate.State))
}

// buffer collects one column of a batch as a typed slice: no boxing per
// value, and the slice is reused from batch to batch.
type buffer interface {
	add(*convstate.State)
	slice() any
	reset()
}

type typedBuffer[T any] struct {
	get  func(*convstate.State) T
	vals []T
}

func (b *typedBuffer[T]) add(s *convstate.State) { b.vals = append(b.vals, b.get(s)) }
func (b *typedBuffer[T]) slice() any             { return b.vals }
func (b *typedBuffer[T]) reset()                 { clear(b.vals); b.vals = b.vals[:0] }

// col declares a column whose Go value has type T; set (nil for derived
// columns) puts a scanned value back into a state.
func col[T any](name, typ string, get func(*convstate.State) T, set func(*convstate.State, T)) Column {
	return Column{
		Name: name, Type: typ,
		value:  func(s *convstate.State) any { return get(s) },
		buffer: func() buffer { return &typedBuffer[T]{get: get} },
		dest: func() (any, func(*convstate.State)) {
			v := new(T)
			return v, func(s *convstate.State) {
				if set != nil {
					set(s, *v)
				}
			}
		},
	}
}

// Names is the comma-separated column list, in order, for INSERT and SELECT.
func Names() string {
	cols := Columns()
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// Values is one conversations row as values, in column order.
func Values(s *convstate.State) []any {
	cols := Columns()
	out := make([]any, len(cols))
	for i, c := range cols {
		out[i] = c.value(s)
	}
	return out
}

// Batch holds conversations rows column by column for one INSERT.
type Batch struct {
	bufs []buffer
	n    int
}

// NewBatch returns an empty batch.
func NewBatch() *Batch {
	cols := Columns()
	b := &Batch{bufs: make([]buffer, len(cols))}
	for i, c := range cols {
		b.bufs[i] = c.buffer()
	}
	return b
}

// Add appends the row of s. It fails, adding nothing, for a state the table
// cannot hold (an unknown status).
func (b *Batch) Add(s *convstate.State) error {
	if _, err := statusEnum(s.Status); err != nil {
		return err
	}
	for _, buf := range b.bufs {
		buf.add(s)
	}
	b.n++
	return nil
}

// Len is the number of rows in the batch.
func (b *Batch) Len() int { return b.n }

// Columns returns the batch's columns as typed slices, in column order.
func (b *Batch) Columns() []any {
	out := make([]any, len(b.bufs))
	for i, buf := range b.bufs {
		out[i] = buf.slice()
	}
	return out
}

// Reset empties the batch, keeping its capacity but none of its values.
func (b *Batch) Reset() {
	for _, buf := range b.bufs {
		buf.reset()
	}
	b.n = 0
}

// Scanner is a row of a query result.
type Scanner interface{ Scan(dest ...any) error }

// Scan reads a row selected with Names() back into a state. Derived columns
// (message_count) are not stored back; the seen-event hashes are not in the
// row.
func Scan(r Scanner) (*convstate.State, error) {
	cols := Columns()
	dests := make([]any, len(cols))
	sets := make([]func(*convstate.State), len(cols))
	for i, c := range cols {
		dests[i], sets[i] = c.dest()
	}
	if err := r.Scan(dests...); err != nil {
		return nil, err
	}
	s := &convstate.State{}
	for _, set := range sets {
		set(s)
	}
	return s, nil
}

// statusEnum is the value of status in the table's Enum8.
func statusEnum(status string) (int8, error) {
	switch status {
	case "active":
		return 1, nil
	case "ended":
		return 2, nil
	}
	return 0, fmt.Errorf("convrow: unknown conversation status %q", status)
}

// chTime maps the zero time to ClickHouse's zero DateTime.
func chTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t
}

// fromCH maps ClickHouse's zero DateTime back to the zero time.
func fromCH(t time.Time) time.Time {
	if t.Unix() <= 0 {
		return time.Time{}
	}
	return t.UTC()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// sortedKeys are the names of a conversation's variables, sorted.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// variableValues are the values of the variables in the order of
// sortedKeys.
func variableValues(m map[string]string) []string {
	keys := sortedKeys(m)
	for i, k := range keys {
		keys[i] = m[k]
	}
	return keys
}

// setVariableKeys starts the variables of a scanned row: its keys, with
// values to come from variable_values (in the same sorted order).
func setVariableKeys(s *convstate.State, keys []string) {
	if len(keys) == 0 {
		return
	}
	s.Variables = make(map[string]string, len(keys))
	for _, k := range keys {
		s.Variables[k] = ""
	}
}

func setVariableValues(s *convstate.State, vals []string) {
	for i, k := range sortedKeys(s.Variables) {
		if i < len(vals) {
			s.Variables[k] = vals[i]
		}
	}
}
