package natsauth_test

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/natsauth"
)

var update = flag.Bool("update", false, "rewrite deploy/kustomize/base/nats/auth.conf")

const deployConfig = "../../deploy/kustomize/base/nats/auth.conf"

// TestDeployConfig keeps the NATS server configuration in deploy/ generated
// from the same permissions the other tests run against, and checks that
// nats-server parses it into exactly those permissions.
// TestKindsExist: the kinds the permissions name are kinds of the event
// contract, so renaming one fails here rather than in production.
func TestKindsExist(t *testing.T) {
	for _, s := range natsauth.Services() {
		for _, k := range natsauth.Kinds(s) {
			if !eventbus.IsKind(k) {
				t.Errorf("%s: %q is not an event kind", s, k)
			}
		}
	}
	for _, k := range natsauth.ServerOnlyKinds() {
		if !eventbus.IsKind(k) {
			t.Errorf("server-only %q is not an event kind", k)
		}
	}
}

func TestDeployConfig(t *testing.T) {
	want := natsauth.ServerConfig()
	if *update {
		if err := os.WriteFile(deployConfig, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(deployConfig)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is stale; regenerate it: go test ./libs/natsauth -run TestDeployConfig -update", deployConfig)
	}

	// The server resolves the password variables from its environment.
	for _, u := range append([]string{natsauth.Operator}, natsauth.Services()...) {
		t.Setenv(natsauth.PasswordVar(u), u+"-pw")
	}
	opts, err := server.ProcessConfigFile(deployConfig)
	if err != nil {
		t.Fatalf("nats-server rejects %s: %v", deployConfig, err)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	if len(users) != len(natsauth.Services())+1 {
		t.Fatalf("%d users, want %d", len(users), len(natsauth.Services())+1)
	}
	for _, s := range natsauth.Services() {
		u := users[s]
		p, _ := natsauth.For(s)
		if u == nil || u.Password != s+"-pw" || u.Permissions == nil {
			t.Fatalf("user %s: %+v", s, u)
		}
		if strings.Join(u.Permissions.Publish.Allow, " ") != strings.Join(p.Publish, " ") ||
			strings.Join(u.Permissions.Publish.Deny, " ") != strings.Join(p.PublishDeny, " ") ||
			strings.Join(u.Permissions.Subscribe.Allow, " ") != strings.Join(p.Subscribe, " ") {
			t.Errorf("user %s: parsed permissions %+v %+v differ from natsauth.For", s, u.Permissions.Publish, u.Permissions.Subscribe)
		}
	}
	if op := users[natsauth.Operator]; op == nil || op.Permissions != nil {
		t.Errorf("operator: %+v", op)
	}
}
