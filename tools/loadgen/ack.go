package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// Ack is one line of the ack log: an event that ingest acknowledged.
type Ack struct {
	// Tenant and Conversation say whose event it is.
	Tenant       string `json:"tenant"`
	Conversation string `json:"conversation"`
	// EventID is the id ingest stored the event under.
	EventID string `json:"event_id"`
	// Kind is the payload's kind, e.g. message_posted.
	Kind string `json:"kind"`
	// Seq is the event's sequence in PARLEY_CONV (for a duplicate, the
	// original's).
	Seq uint64 `json:"seq"`
	// Duplicate is set when the event had already been stored (a retry).
	Duplicate bool `json:"duplicate"`
}

// ReadAcks reads an ack log (JSON lines; blank lines are skipped).
func ReadAcks(r io.Reader) ([]Ack, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []Ack
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var a Ack
		if err := json.Unmarshal(line, &a); err != nil {
			return nil, fmt.Errorf("ack log line %d: %w", n, err)
		}
		if a.Tenant == "" || a.Conversation == "" || a.EventID == "" {
			return nil, fmt.Errorf("ack log line %d: tenant, conversation and event_id are required", n)
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ack log: %w", err)
	}
	return out, nil
}

// ackWriter writes Acks as JSON lines; it is safe for concurrent use and
// keeps the first write error.
type ackWriter struct {
	mu  sync.Mutex
	w   *bufio.Writer
	err error
}

func newAckWriter(w io.Writer) *ackWriter {
	if w == nil {
		return nil
	}
	return &ackWriter{w: bufio.NewWriterSize(w, 64<<10)}
}

func (a *ackWriter) write(acks []Ack) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ack := range acks {
		if a.err != nil {
			return
		}
		b, err := json.Marshal(ack)
		if err == nil {
			b = append(b, '\n')
			_, err = a.w.Write(b)
		}
		a.err = err
	}
}

func (a *ackWriter) flush() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil {
		a.err = a.w.Flush()
	}
	if a.err != nil {
		return fmt.Errorf("loadgen: ack log: %w", a.err)
	}
	return nil
}
