package stack

import (
	"maps"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/services/ingest"
	"github.com/parley-dev/parley/services/lifecycle"
	"github.com/parley-dev/parley/services/notification"
	"github.com/parley-dev/parley/services/reporting"
	"github.com/parley-dev/parley/services/tagging"
)

// TestREADMEListsEveryVariable keeps the README's configuration reference
// true: every variable a service reads, with its default, must be there.
func TestREADMEListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, cfg := range []any{ingest.Config{}, lifecycle.Config{}, tagging.Config{}, reporting.Config{}, notification.Config{},
		tenancy.AuthConfig{}, tenancy.AuditConfig{}, // read by libs/service for every service
	} {
		collect(reflect.TypeOf(cfg), vars)
	}
	// The listen addresses are named after each service (libs/service).
	for _, name := range service.Names() {
		maps.Copy(vars, service.ListenVars(name))
	}
	if len(vars) < 20 {
		t.Fatalf("found only %d variables; is the walk broken?", len(vars))
	}
	for name, def := range vars {
		row := "| `" + name + "` | "
		i := strings.Index(string(readme), row)
		if i < 0 {
			t.Errorf("README.md does not document %s", name)
			continue
		}
		line := string(readme)[i:]
		line = line[:strings.IndexByte(line, '\n')]
		if def != "" && !strings.Contains(line, "`"+def+"`") {
			t.Errorf("README.md documents %s without its default %q: %s", name, def, line)
		}
	}
}

func collect(t reflect.Type, out map[string]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name := f.Tag.Get("env"); name != "" && name != "-" {
			out[name] = f.Tag.Get("envDefault")
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") != "-" {
			collect(f.Type, out)
		}
	}
}
