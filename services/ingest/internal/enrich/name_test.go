package enrich

import (
	"fmt"
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
