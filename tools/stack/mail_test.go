package stack

import (
	"slices"
	"testing"
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
