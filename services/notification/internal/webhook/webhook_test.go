package webhook_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-dev/parley/services/notification/internal/webhook"
)

// The example of the Standard Webhooks specification: the signature computed
// there by its reference libraries.
func TestSignMatchesTheStandardWebhooksExample(t *testing.T) {
	sig, err := webhook.Sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
		time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if err != nil || sig != "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" {
		t.Fatalf("signature %q, %v", sig, err)
	}
}

func TestBlocked(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "fe80::1",
		"fd00:ec2::254", "100.100.100.200", "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1", "::"} {
		if webhook.Blocked(netip.MustParseAddr(a)) == "" {
			t.Errorf("%s is not blocked", a)
		}
	}
	for _, a := range []string{"93.184.215.14", "2606:4700::6810:84e5", "8.8.8.8"} {
		if why := webhook.Blocked(netip.MustParseAddr(a)); why != "" {
			t.Errorf("%s is blocked: %s", a, why)
		}
	}
}

// The policy is applied on the address connected to, whatever the URL
// passed when saved: a request to loopback is refused before any byte is
// sent unless private targets are allowed; responses are read up to the
// limit only.
func TestClientRefusesInternalAddressesAtConnectTime(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
	}))
	defer srv.Close()
	req := webhook.Request{URL: srv.URL, ID: "msg_1", At: time.Now(), Body: []byte("{}"), Secrets: []string{webhook.NewSecret()}}
	r := webhook.NewClient(webhook.Policy{AllowHTTP: true}, time.Second, 1024).Send(context.Background(), req)
	if r.Err == nil || !strings.Contains(r.Err.Error(), "refused by the SSRF policy") || hits.Load() != 0 {
		t.Fatalf("result %+v, hits %d", r, hits.Load())
	}
	r = webhook.NewClient(webhook.Policy{AllowHTTP: true, AllowPrivate: true}, time.Second, 1024).Send(context.Background(), req)
	if r.Err != nil || r.Status != 200 || hits.Load() != 1 {
		t.Fatalf("allowed: result %+v, hits %d", r, hits.Load())
	}
}

func TestCheckURL(t *testing.T) {
	strict := webhook.Policy{}
	for u, want := range map[string]string{
		"https://hooks.example.com/x": "",
		"http://hooks.example.com/x":  "must use https",
		"https://127.0.0.1/":          "must not point to a loopback address",
		"https://localhost/":          "must not point to a loopback address",
		"https://user:pw@example.com": "must not hold credentials",
		"ftp://example.com/":          "must be an http(s) URL",
	} {
		if got := strict.CheckURL(u); got != want {
			t.Errorf("%s: %q, want %q", u, got, want)
		}
	}
	if got := (webhook.Policy{AllowHTTP: true, AllowPrivate: true}).CheckURL("http://127.0.0.1:8080/"); got != "" {
		t.Errorf("allowed: %q", got)
	}
}
