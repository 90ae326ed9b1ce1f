package stack

import "testing"

// make run generates ingest's token secret once and reuses it, so widget
// tokens survive a restart; the environment wins.
func TestTokenSecret(t *testing.T) {
	t.Setenv("PARLEY_INGEST_TOKEN_SECRET", "")
	s := &Stack{Options: Options{Dir: t.TempDir()}}
	first, err := s.tokenSecret()
	if err != nil || len(first) != 64 {
		t.Fatalf("generated secret %q, %v", first, err)
	}
	again, err := s.tokenSecret()
	if err != nil || again != first {
		t.Fatalf("second run: %q, %v; want %q", again, err, first)
	}
	t.Setenv("PARLEY_INGEST_TOKEN_SECRET", "from-env")
	if got, _ := s.tokenSecret(); got != "from-env" {
		t.Fatalf("with the variable set: %q", got)
	}
}
