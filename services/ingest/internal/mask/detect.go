// Package mask applies a tenant's PII masking rules to events before they
// are stored: built-in detectors (email, phone, payment card with a Luhn
// check, IBAN with its mod-97 check) and custom RE2 patterns, each with an
// action (mask, hash or drop). See docs/privacy.md.
package mask

import (
	"math/big"
	"regexp"
	"strings"
)

// Built-in detector names.
const (
	DetectorEmail  = "email"
	DetectorPhone  = "phone"
	DetectorCard   = "card"
	DetectorIBAN   = "iban"
	DetectorCustom = "custom"
)

// detector finds candidate spans and confirms them.
type detector struct {
	// may is a cheap test that s may hold a match (nil: always try re).
	may   func(s string) bool
	re    *regexp.Regexp
	valid func(string) bool // nil: every match counts
}

// hasDigits returns a test of at least n ASCII digits.
func hasDigits(n int) func(string) bool {
	return func(s string) bool {
		seen := 0
		for i := 0; i < len(s); i++ {
			if s[i] >= '0' && s[i] <= '9' {
				if seen++; seen == n {
					return true
				}
			}
		}
		return false
	}
}

var builtins = map[string]detector{
	DetectorEmail: {may: func(s string) bool { return strings.IndexByte(s, '@') >= 0 }, re: regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`)},
	// 8 to 15 digits (E.164), optionally separated by spaces, dots, dashes
	// or parentheses, optionally with a leading +.
	DetectorPhone: {may: hasDigits(8), re: regexp.MustCompile(`\+?\(?\d[\d ().\-]{6,20}\d`), valid: validPhone},
	DetectorCard:  {may: hasDigits(13), re: regexp.MustCompile(`\b\d(?:[ \-]?\d){11,18}\b`), valid: validCard},
	DetectorIBAN:  {may: hasDigits(4), re: regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b`), valid: ValidIBAN},
}

// digits returns s without anything but ASCII digits.
func digits(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func validPhone(s string) bool {
	n := len(digits(s))
	return n >= 8 && n <= 15
}

func validCard(s string) bool {
	d := digits(s)
	return len(d) >= 13 && len(d) <= 19 && Luhn(d)
}

// Luhn reports whether the digit string d passes the Luhn check.
func Luhn(d string) bool {
	if d == "" {
		return false
	}
	sum := 0
	double := false
	for i := len(d) - 1; i >= 0; i-- {
		c := d[i]
		if c < '0' || c > '9' {
			return false
		}
		n := int(c - '0')
		if double {
			n *= 2
			if n > 9 {
				n -= 9
			}
		}
		sum += n
		double = !double
	}
	return sum%10 == 0
}

// ValidIBAN reports whether s (spaces allowed) is an IBAN whose check
// digits are right (ISO 13616 mod 97 = 1).
func ValidIBAN(s string) bool {
	s = strings.ReplaceAll(s, " ", "")
	if len(s) < 15 || len(s) > 34 {
		return false
	}
	rearranged := s[4:] + s[:4]
	var num strings.Builder
	for i := 0; i < len(rearranged); i++ {
		c := rearranged[i]
		switch {
		case c >= '0' && c <= '9':
			num.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			num.WriteString(itoa(int(c-'A') + 10))
		default:
			return false
		}
	}
	n, ok := new(big.Int).SetString(num.String(), 10)
	return ok && new(big.Int).Mod(n, big.NewInt(97)).Int64() == 1
}

func itoa(n int) string { return string([]byte{byte('0' + n/10), byte('0' + n%10)}) }
