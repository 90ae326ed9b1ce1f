package enrich

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestDisplayName(t *testing.T) {
	if got := DisplayName(""); got != "" {
		t.Fatalf(`DisplayName("") = %q, want ""`, got)
	}
	a := DisplayName("visitor-token-1")
	if a != DisplayName("visitor-token-1") {
		t.Fatal("DisplayName is not deterministic")
	}
	// Pinned so that an accidental change of word lists or hashing, which
	// would rename every visitor, fails loudly.
	if want := "Gentle Otter 52"; a != want {
		t.Fatalf("DisplayName(visitor-token-1) = %q, want %q", a, want)
	}

	seen := map[string]bool{}
	for i := range 1000 {
		name := DisplayName(fmt.Sprintf("token-%d", i))
		parts := strings.Split(name, " ")
		if len(parts) != 3 {
			t.Fatalf("DisplayName = %q, want three words", name)
		}
		if n, err := strconv.Atoi(parts[2]); err != nil || n < 1 || n > 99 {
			t.Fatalf("DisplayName = %q, want a number in 1..99", name)
		}
		seen[name] = true
	}
	if len(seen) < 990 {
		t.Fatalf("only %d distinct names for 1000 tokens", len(seen))
	}
}

func TestWordLists(t *testing.T) {
	for name, list := range map[string][]string{"adjectives": adjectives[:], "animals": animals[:]} {
		if len(list) != 64 {
			t.Errorf("%s has %d words, want 64", name, len(list))
		}
		dup := map[string]bool{}
		for _, w := range list {
			if dup[w] {
				t.Errorf("%s: duplicate %q", name, w)
			}
			dup[w] = true
			if w == "" || w[0] < 'A' || w[0] > 'Z' {
				t.Errorf("%s: %q is not capitalized", name, w)
			}
			for _, r := range w {
				if r > 0x7f || r == ' ' {
					t.Errorf("%s: %q is not a single ASCII word", name, w)
				}
			}
		}
	}
}

// TestKeyedDisplayNameCollisions measures collisions over 100,000 tokens:
// keyed names must collide about as rarely as uniform draws from their
// space (the birthday estimate, computed here independently), far less
// than the legacy names did.
func TestKeyedDisplayNameCollisions(t *testing.T) {
	const n = 100_000
	key := NameKey([]byte("secret"), "acme")
	keyed, legacy := map[string]bool{}, map[string]bool{}
	for i := range n {
		tok := fmt.Sprintf("visitor-%d", i)
		keyed[KeyedDisplayName(key, tok)] = true
		legacy[DisplayName(tok)] = true
	}
	collisions := func(distinct int) int { return n - distinct }
	// Expected collisions drawing n from N uniformly: n - N(1-(1-1/N)^n).
	expected := func(space float64) float64 { return n - space*(1-math.Pow(1-1/space, n)) }
	space := 64.0 * 64 * 9999
	got, old := collisions(len(keyed)), collisions(len(legacy))
	t.Logf("collisions over %d tokens: keyed %d (expected %.0f), legacy %d (expected %.0f)", n, got, expected(space), old, expected(64*64*99))
	if float64(got) > 2*expected(space)+20 {
		t.Fatalf("keyed names: %d collisions, expected about %.0f", got, expected(space))
	}
	if got*20 > old {
		t.Fatalf("keyed names: %d collisions, not far fewer than legacy %d", got, old)
	}
}

func TestKeyedDisplayName(t *testing.T) {
	if KeyedDisplayName(NameKey([]byte("s"), "acme"), "") != "" {
		t.Fatal("empty token must give an empty name")
	}
	// Equal for the same tenant and secret; unrelated across tenants and
	// secrets, and unlike the unkeyed name anyone can compute.
	var same, acrossTenants, acrossSecrets, legacy int
	for i := range 1000 {
		tok := fmt.Sprintf("tok-%d", i)
		a := KeyedDisplayName(NameKey([]byte("s"), "acme"), tok)
		if a == KeyedDisplayName(NameKey([]byte("s"), "acme"), tok) {
			same++
		}
		if a == KeyedDisplayName(NameKey([]byte("s"), "globex"), tok) {
			acrossTenants++
		}
		if a == KeyedDisplayName(NameKey([]byte("other"), "acme"), tok) {
			acrossSecrets++
		}
		if a == DisplayName(tok) {
			legacy++
		}
		parts := strings.Split(a, " ")
		if n, err := strconv.Atoi(parts[len(parts)-1]); len(parts) != 3 || err != nil || n < 1 || n > KeyedNameMax {
			t.Fatalf("name %q", a)
		}
	}
	if same != 1000 || acrossTenants > 1 || acrossSecrets > 1 || legacy > 1 {
		t.Fatalf("same %d, across tenants %d, across secrets %d, legacy %d", same, acrossTenants, acrossSecrets, legacy)
	}
	// The key is HMAC-SHA256(secret, "parley-display-name" 0x00 tenant).
	m := hmac.New(sha256.New, []byte("s"))
	m.Write([]byte("parley-display-name\x00acme"))
	if !hmac.Equal(m.Sum(nil), NameKey([]byte("s"), "acme")) {
		t.Fatal("NameKey is not the documented derivation")
	}
}
