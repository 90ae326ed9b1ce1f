package mask

import (
	"strings"
	"testing"
)

func TestLuhnAndIBAN(t *testing.T) {
	for _, c := range []struct {
		s    string
		want bool
	}{
		{"4111111111111111", true}, {"5500000000000004", true}, {"378282246310005", true}, {"79927398713", true},
		{"4111111111111112", false}, {"1234567812345678", false}, {"", false}, {"12a4", false},
	} {
		if got := Luhn(c.s); got != c.want {
			t.Errorf("Luhn(%q) = %v", c.s, got)
		}
	}
	for _, c := range []struct {
		s    string
		want bool
	}{
		{"DE89 3704 0044 0532 0130 00", true}, {"GB82WEST12345698765432", true}, {"FR1420041010050500013M02606", true},
		{"DE89 3704 0044 0532 0130 01", false}, {"GB82WEST1234569876543", false}, {"de89370400440532013000", false},
	} {
		if got := ValidIBAN(c.s); got != c.want {
			t.Errorf("ValidIBAN(%q) = %v", c.s, got)
		}
	}
}

func TestString(t *testing.T) {
	set, err := Compile([]Rule{
		{ID: "a", Detector: DetectorEmail, Action: ActionMask},
		{ID: "b", Detector: DetectorCard, Action: ActionMask},
		{ID: "c", Detector: DetectorIBAN, Action: ActionMask},
		{ID: "d", Detector: DetectorPhone, Action: ActionMask},
	}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"pay DE89 3704 0044 0532 0130 00 now":         "pay [iban] now",
		"pay DE88 3704 0044 0532 0130 00 now":         "pay DE88 3704 0044 0532 0130 00 now",
		"card 4111-1111-1111-1111.":                   "card [card].",
		"order 1234567812345678":                      "order 1234567812345678",
		"call (030) 1234-5678 or +1 415 555 2671":     "call [phone] or [phone]",
		"year 2024, 5 items":                          "year 2024, 5 items",
		"mail first.last+tag@sub.example.co.uk today": "mail [email] today",
	} {
		if got, ok := set.String(in); got != want || !ok {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzDetectors checks on any input that masking never panics, is
// idempotent, leaves no confirmed card number or IBAN behind and changes
// nothing outside the spans it replaced (the text around them is kept).
func FuzzDetectors(f *testing.F) {
	for _, s := range []string{"a@b.example", "4111 1111 1111 1111", "DE89370400440532013000", "+49 30 1234567", "1234567812345678", "x"} {
		f.Add(s)
	}
	set, err := Compile([]Rule{
		{ID: "a", Detector: DetectorEmail, Action: ActionMask},
		{ID: "b", Detector: DetectorCard, Action: ActionMask},
		{ID: "c", Detector: DetectorIBAN, Action: ActionHash},
		{ID: "d", Detector: DetectorPhone, Action: ActionMask},
	}, []byte("k"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, ok := set.String(s)
		if !ok {
			t.Fatal("no drop rule, yet dropped")
		}
		again, _ := set.String(out)
		if again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, out, again)
		}
		for _, m := range builtins[DetectorCard].re.FindAllString(out, -1) {
			if validCard(m) {
				t.Fatalf("card %q left in %q", m, out)
			}
		}
		for _, m := range builtins[DetectorIBAN].re.FindAllString(out, -1) {
			if ValidIBAN(m) {
				t.Fatalf("IBAN %q left in %q", m, out)
			}
		}
		if out == s {
			return
		}
		// Whatever was kept is a prefix and a suffix of the input.
		i := 0
		for i < len(out) && i < len(s) && out[i] == s[i] {
			i++
		}
		if i == len(out) || !strings.Contains(out[i:], "[") {
			t.Fatalf("changed %q to %q without a marker", s, out)
		}
	})
}

func BenchmarkEnvelopeString(b *testing.B) {
	set, _ := Compile([]Rule{
		{ID: "a", Detector: DetectorEmail, Action: ActionMask},
		{ID: "b", Detector: DetectorCard, Action: ActionMask},
		{ID: "c", Detector: DetectorIBAN, Action: ActionMask},
		{ID: "d", Detector: DetectorPhone, Action: ActionMask},
	}, []byte("k"))
	text := strings.Repeat("where is my order? ", 15) + "mail a@b.example card 4111 1111 1111 1111"
	b.ReportAllocs()
	for b.Loop() {
		set.String(text)
	}
}
