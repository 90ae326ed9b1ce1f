// Package search is the one text normaliser of full-text search: the
// projector indexes message text with Tokens, and the filter turns a search
// into tokens with the same function, so both sides agree on what a word is.
package search

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on what is indexed.
const (
	// MaxTokenRunes cuts longer words (at write and query time alike, so
	// a long word still matches itself).
	MaxTokenRunes = 32
	// MaxTokensPerText bounds the distinct words indexed per message.
	MaxTokensPerText = 256
)

// Tokens returns the distinct words of text in first-seen order: maximal
// runs of letters and digits (any script), lower-cased (Unicode simple
// case folding), each cut to MaxTokenRunes; everything else separates
// words. At most MaxTokensPerText are returned.
func Tokens(text string) []string {
	var out []string
	seen := map[string]struct{}{}
	var b strings.Builder
	n := 0
	flush := func() {
		if b.Len() == 0 {
			return
		}
		t := b.String()
		b.Reset()
		n = 0
		if _, ok := seen[t]; ok || len(out) >= MaxTokensPerText {
			return
		}
		seen[t] = struct{}{}
		out = append(out, t)
	}
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		i += size
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.Is(unicode.Mn, r) {
			flush()
			continue
		}
		if n < MaxTokenRunes {
			b.WriteRune(unicode.ToLower(r))
			n++
		}
	}
	flush()
	return out
}
