package stack

import (
	"maps"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/services/ingest"
	"github.com/parley-dev/parley/services/lifecycle"
	"github.com/parley-dev/parley/services/notification"
	"github.com/parley-dev/parley/services/reporting"
	"github.com/parley-dev/parley/services/tagging"
)

// TestAdminPortsDefaultToLoopback: unless configured otherwise, every
// service's admin port (metrics, readiness, profiles when enabled) listens on
// loopback only; the Kubernetes manifests bind 0.0.0.0 explicitly.
func TestAdminPortsDefaultToLoopback(t *testing.T) {
	vars := map[string]string{}
	for _, cfg := range []any{ingest.Config{}, lifecycle.Config{}, tagging.Config{}, reporting.Config{}, notification.Config{}} {
		collect(reflect.TypeOf(cfg), vars)
	}
	// The listen addresses are named after each service (libs/service).
	for _, name := range service.Names() {
		maps.Copy(vars, service.ListenVars(name))
	}
	n := 0
	for name, def := range vars {
		if !strings.HasSuffix(name, "_ADMIN_ADDR") {
			continue
		}
		n++
		host, _, err := net.SplitHostPort(def)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			t.Errorf("%s defaults to %q, not a loopback address", name, def)
		}
	}
	if n != 5 {
		t.Fatalf("found %d admin address variables, want 5", n)
	}
	if def := vars["PARLEY_PPROF_ENABLED"]; def != "false" {
		t.Errorf("PARLEY_PPROF_ENABLED defaults to %q, want false", def)
	}
}
