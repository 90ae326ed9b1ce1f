package stack

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/localinfra/mailcatcher"
)

// TestNotificationProcessSendsToCatcher: in process mode the notification
// process is pointed at the stack's mail catcher, unless the caller's
// environment names an SMTP server.
func TestNotificationProcessSendsToCatcher(t *testing.T) {
	t.Setenv("PARLEY_SMTP_HOST", "")
	s := &Stack{SMTPAddr: "127.0.0.1:20125"}
	s.Dir = t.TempDir() // serviceEnv saves ingest's token secret there
	env := s.serviceEnv(Replica{Service: "notification", GRPC: 1, Admin: 2})
	for _, want := range []string{"PARLEY_SMTP_HOST=127.0.0.1", "PARLEY_SMTP_PORT=20125", "PARLEY_SMTP_TLS=none"} {
		if !slices.Contains(env, want) {
			t.Errorf("notification's environment lacks %s", want)
		}
	}
	if env := s.serviceEnv(Replica{Service: "ingest", GRPC: 1, Admin: 2}); slices.Contains(env, "PARLEY_SMTP_PORT=20125") {
		t.Error("ingest is given the SMTP settings")
	}
	t.Setenv("PARLEY_SMTP_HOST", "smtp.example.com")
	if env := s.serviceEnv(Replica{Service: "notification", GRPC: 1, Admin: 2}); slices.Contains(env, "PARLEY_SMTP_PORT=20125") {
		t.Error("the caller's PARLEY_SMTP_HOST was overridden")
	}
}

// waitTranscript waits up to 30s for a mail to rcpt in the catcher's dir
// whose text part holds every one of texts.
func waitTranscript(t *testing.T, dir, rcpt string, texts ...string) {
	t.Helper()
	store := &mailcatcher.Store{Dir: dir}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		metas, err := store.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metas {
			if !slices.Contains(m.Envelope.To, rcpt) {
				continue
			}
			full, err := store.Load(m.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range texts {
				if !strings.Contains(full.Text, x) {
					t.Fatalf("transcript lacks %q:\n%s", x, full.Text)
				}
			}
			return
		}
	}
	t.Fatalf("no transcript for %s in %s", rcpt, dir)
}
