package main

import (
	"bytes"
	"context"
	"net/smtp"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parley-dev/parley/libs/localinfra/mailcatcher"
)

// mailctl runs parleyctl mail with the given catcher directory.
func mailctl(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(append([]string{"mail"}, args...), "--dir", dir))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// TestMailCommands: mail sent to the catcher shows up in `parleyctl mail
// list` (time, from, to, subject) and `show` (headers and text part).
func TestMailCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	c, err := mailcatcher.Start(mailcatcher.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(to, subject, body string) {
		msg := "From: Acme <noreply@acme.example>\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + body + "\r\n"
		if err := smtp.SendMail(c.Addr(), nil, "noreply@acme.example", []string{to}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	send("first@example.com", "=?utf-8?q?Caf=C3=A9_transcript?=", "Hello =E2=9C=93")
	send("second@example.com", "Report ready\x1b[31m", "Download: https://x.example/r\x1b]0;pwned\x07")

	out, err := mailctl(t, dir, "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("list:\n%s", out)
	}
	for i, want := range [][]string{{"Acme <noreply@acme.example>", "first@example.com", "Café transcript"}, {"second@example.com", "Report ready"}} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("list line %d lacks %q: %s", i+1, w, lines[i+1])
			}
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Error("list printed a terminal escape from a subject")
	}
	if out, _ := mailctl(t, dir, "list", "--limit", "1"); strings.Contains(out, "first@") || !strings.Contains(out, "second@") {
		t.Errorf("--limit 1 keeps the newest:\n%s", out)
	}

	id := strings.Fields(lines[1])[0]
	out, err = mailctl(t, dir, "show", id)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Envelope-To: first@example.com", "Subject: Café transcript", "From: Acme <noreply@acme.example>", "\n\nHello ✓\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if out, err := mailctl(t, dir, "show", id, "--raw"); err != nil || !strings.Contains(out, "Hello =E2=9C=93") {
		t.Errorf("show --raw: %v\n%s", err, out)
	}
	if out, err := mailctl(t, dir, "show", strings.Fields(lines[2])[0]); err != nil || strings.ContainsAny(out, "\x1b\x07") ||
		!strings.Contains(out, "Download: https://x.example/r]0;pwned") {
		t.Errorf("show printed terminal controls or lost the text: %v %q", err, out)
	}
	if _, err := mailctl(t, dir, "show", "nope"); err == nil {
		t.Error("show of an unknown id succeeded")
	}
}
