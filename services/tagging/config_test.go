package tagging_test

import (
	"slices"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/services/tagging"
)

// TestConfigDefaults: the documented defaults parse, and a Config built in
// code (zero values, as the local stack does) means the same detectors.
func TestConfigDefaults(t *testing.T) {
	cfg, err := config.Load[tagging.Config]()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConsumerBatch != 500 || cfg.MaxMessages != 50 || cfg.RuleCostLimit != 1_000_000 || cfg.MaxExpressionBytes != 4096 ||
		cfg.LongWait != 30*time.Second || cfg.RepeatWindow != 5 || len(cfg.DetectorsDisabled) != 0 ||
		!slices.Contains(cfg.NegativePhrases, "that's wrong") || cfg.BackfillMaxConversations != 100_000 || cfg.MaxConcurrentBackfills != 2 ||
		cfg.MaxBackfillsPerTenant != 1 || cfg.MaxRulesPerTenant != tagging.DefaultMaxRulesPerTenant || cfg.MaxEventTextBytes != 16384 {
		t.Fatalf("defaults: %+v", cfg)
	}
	loaded, zero := cfg.Detectors(), (tagging.Config{}).Detectors()
	if loaded.LongWait != zero.LongWait || loaded.RepeatWindow != zero.RepeatWindow || !slices.Equal(loaded.NegativePhrases, zero.NegativePhrases) {
		t.Fatalf("env defaults %+v differ from code defaults %+v", loaded, zero)
	}
}
