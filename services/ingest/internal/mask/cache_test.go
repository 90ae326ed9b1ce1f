package mask

import (
	"context"
	"errors"
	"testing"
	"time"
)

type source struct {
	rules map[string][]Rule
	err   error
	loads int
}

func (s *source) MaskingRules(_ context.Context, tenant string) ([]Rule, error) {
	s.loads++
	return s.rules[tenant], s.err
}

// TestCache: entries live for the TTL, at most max tenants are kept, an
// expired entry serves through a source outage, and with no entry the
// outage is an error (nothing may be stored unmasked).
func TestCache(t *testing.T) {
	now := time.Unix(0, 0)
	src := &source{rules: map[string][]Rule{"a": {{ID: "e", Detector: DetectorEmail, Action: ActionMask}}}}
	c := NewCache(src, []byte("s"), time.Minute, 2, func() time.Time { return now })
	ctx := context.Background()
	get := func(tenant string) (*Set, error) { return c.Rules(ctx, tenant) }
	if s, err := get("a"); err != nil || s.Empty() {
		t.Fatalf("a: %v %v", s, err)
	}
	get("a")
	if src.loads != 1 {
		t.Fatalf("%d loads within the TTL, want 1", src.loads)
	}
	now = now.Add(2 * time.Minute)
	src.err = errors.New("down")
	if s, err := get("a"); err != nil || s.Empty() {
		t.Fatalf("expired entry during an outage: %v %v", s, err)
	}
	loads := src.loads
	get("a")
	if src.loads != loads {
		t.Fatal("asked the failing source again at once")
	}
	now = now.Add(outageRetry)
	get("a")
	if src.loads != loads+1 {
		t.Fatal("did not ask the source again after outageRetry")
	}
	if _, err := get("b"); err == nil {
		t.Fatal("no entry during an outage: want an error")
	}
	src.err = nil
	get("b")
	now = now.Add(time.Second)
	get("c") // evicts the oldest
	c.mu.Lock()
	n := len(c.entries)
	c.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d entries, want at most 2", n)
	}
	c.Forget("c")
	before := src.loads
	get("c")
	if src.loads != before+1 {
		t.Fatal("Forget did not drop the entry")
	}
}
