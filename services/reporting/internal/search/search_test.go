package search

import (
	"slices"
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"I want a REFUND, please!", []string{"i", "want", "a", "refund", "please"}},
		{"refund refund Refund", []string{"refund"}},
		{"  ...  ", nil},
		{"Größe: 42cm; e-mail", []string{"größe", "42cm", "e", "mail"}},
		{"заказ №7 не пришёл", []string{"заказ", "7", "не", "пришёл"}},
		{"order#123/return", []string{"order", "123", "return"}},
	} {
		if got := Tokens(c.in); !slices.Equal(got, c.want) {
			t.Errorf("Tokens(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestTokensBounds(t *testing.T) {
	long := strings.Repeat("x", 100)
	if got := Tokens(long + " " + long + "y"); len(got) != 1 || len(got[0]) != MaxTokenRunes {
		t.Errorf("long words: %q", got)
	}
	var words []string
	for i := range 1000 {
		words = append(words, "w"+strings.Repeat("a", i%50)+string(rune('a'+i%26))+string(rune('a'+i/26%26)))
	}
	if got := Tokens(strings.Join(words, " ")); len(got) != MaxTokensPerText {
		t.Errorf("%d tokens, want %d", len(got), MaxTokensPerText)
	}
}
