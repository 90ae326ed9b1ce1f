package eventbus_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLogSealed fails when code outside libs/eventbus (tests aside) reaches
// for the raw JetStream client (consumers, tools and services read and
// manage the log through the Bus's named operations) or when ingest builds
// an envelope by hand instead of with NewEnvelope.
func TestLogSealed(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// libs/service hands the client to natsauth.WaitForStreams, which
	// only looks the streams up (services that do not manage streams).
	allowed := map[string]bool{"libs/service/service.go": true}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") || rel == "libs/eventbus" || d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") || allowed[rel] {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(src), ".JetStream()") {
			t.Errorf("%s calls Bus.JetStream(): use the Bus's operations (Read, StreamState, ConsumerLag, ...)", rel)
		}
		if strings.HasPrefix(rel, "services/ingest/") && strings.Contains(strings.ReplaceAll(string(src), "[]*eventv1.Envelope{", ""), "eventv1.Envelope{") {
			t.Errorf("%s builds an envelope by hand: use eventbus.NewEnvelope", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
