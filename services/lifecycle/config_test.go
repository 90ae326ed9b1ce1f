package lifecycle

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
)

func TestConfigFromEnvironment(t *testing.T) {
	t.Setenv("PARLEY_LIFECYCLE_CHANNEL_TIMEOUTS", "whatsapp=24h,CHANNEL_WEB_WIDGET=30m")
	t.Setenv("PARLEY_LIFECYCLE_HANDOFF_TIMEOUT", "2m")
	cfg, err := config.Load[Config]()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SessionTimeout != 24*time.Hour || cfg.SweepInterval != 30*time.Second || cfg.EndedViewTTL != 168*time.Hour ||
		cfg.ConsumerBatch != 500 || cfg.HandoffTimeout != 2*time.Minute {
		t.Fatalf("config %+v", cfg)
	}
	got, err := cfg.channelDefaults()
	if err != nil || len(got) != 2 || got["CHANNEL_WHATSAPP"] != 24*time.Hour || got["CHANNEL_WEB_WIDGET"] != 30*time.Minute {
		t.Fatalf("channel defaults %v %v", got, err)
	}
}

func TestUnknownChannelIsAConfigurationError(t *testing.T) {
	err := Run(context.Background(), Config{ChannelTimeouts: map[string]time.Duration{"pigeon": time.Hour}})
	if err == nil || !strings.Contains(err.Error(), `unknown channel "pigeon"`) {
		t.Fatalf("got %v", err)
	}
}

func TestZeroConfigGetsDefaults(t *testing.T) {
	var cfg Config
	cfg.defaults()
	if cfg.SessionTimeout != 24*time.Hour || cfg.HandoffTimeout != 5*time.Minute || cfg.SweepInterval != 30*time.Second ||
		cfg.EndedViewTTL != 168*time.Hour || cfg.ConsumerBatch != 500 || cfg.Clock == nil {
		t.Fatalf("defaults %+v", cfg)
	}
}
