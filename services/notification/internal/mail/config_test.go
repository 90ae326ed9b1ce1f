package mail_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/services/notification/internal/mail"
)

// TestConfigDefaults: an empty environment gives the defaults the README's
// configuration reference documents, which reach the local catcher.
func TestConfigDefaults(t *testing.T) {
	vars := map[string]string{
		"PARLEY_SMTP_HOST": "127.0.0.1", "PARLEY_SMTP_PORT": "1025", "PARLEY_SMTP_TLS": "none",
		"PARLEY_SMTP_FROM": "Parley <parley@localhost>", "PARLEY_SMTP_TIMEOUT": "30s",
		"PARLEY_SMTP_USERNAME": "", "PARLEY_SMTP_PASSWORD": "", "PARLEY_SMTP_TLS_CA": "",
	}
	for v := range vars {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	cfg, err := config.Load[mail.Config]()
	if err != nil {
		t.Fatal(err)
	}
	want := mail.Config{Host: "127.0.0.1", Port: 1025, TLS: mail.TLSNone, From: "Parley <parley@localhost>", Timeout: 30 * time.Second}
	if cfg != want {
		t.Errorf("defaults %+v, want %+v", cfg, want)
	}
	if _, err := mail.NewSender(cfg); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
	readme, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for v, def := range vars {
		row := "| `" + v + "` | "
		i := strings.Index(string(readme), row)
		if i < 0 {
			t.Errorf("README.md does not document %s", v)
			continue
		}
		line := string(readme)[i:]
		line = line[:strings.IndexByte(line, '\n')]
		if def != "" && !strings.Contains(line, "`"+def+"`") {
			t.Errorf("README.md documents %s without its default %q", v, def)
		}
	}
}
