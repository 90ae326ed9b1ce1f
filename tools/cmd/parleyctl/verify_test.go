package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyCommandInput checks the command's input handling; the checks
// themselves are tested against the whole stack in tools/verify.
func TestVerifyCommandInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.jsonl")
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`{"tenant":"a"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.jsonl")
	if err := os.WriteFile(good, []byte(`{"tenant":"acme","conversation":"c1","event_id":"e1","kind":"message_posted","seq":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"verify"}, `required flag(s) "acks"`},
		{[]string{"verify", "--acks", filepath.Join(dir, "missing.jsonl")}, "no such file"},
		{[]string{"verify", "--acks", empty}, "the ack log is empty"},
		{[]string{"verify", "--acks", bad}, "line 1"},
		{[]string{"verify", "--acks", empty, "--tagging-max-messages", "many"}, `invalid argument "many" for "--tagging-max-messages"`},
		// The NATS credentials reach the connection: two kinds at once are refused.
		{[]string{"verify", "--acks", good, "--nats-user", "parley-operator", "--nats-creds", filepath.Join(dir, "op.creds")}, "set one of PARLEY_NATS_USER/PASSWORD, PARLEY_NATS_CREDS"},
	} {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(c.args)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error with %q", c.args, err, c.want)
		}
	}
}
