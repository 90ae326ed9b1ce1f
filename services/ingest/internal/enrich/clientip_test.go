package enrich

import (
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	lb := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	tests := []struct {
		name         string
		forwardedFor string
		realIP       string
		peer         string
		trusted      []netip.Prefix
		want         string // "" means not ok
	}{
		{"peer host:port", "", "", "203.0.113.7:51234", nil, "203.0.113.7"},
		{"peer bare v4", "", "", "203.0.113.7", nil, "203.0.113.7"},
		{"peer v6 with port", "", "", "[2001:db8::1]:443", nil, "2001:db8::1"},
		{"peer bare v6", "", "", "2001:db8::1", nil, "2001:db8::1"},
		{"peer bracketed v6", "", "", "[2001:db8::1]", nil, "2001:db8::1"},
		{"peer mapped v4", "", "", "[::ffff:198.51.100.4]:80", nil, "198.51.100.4"},
		{"peer zone dropped", "", "", "[fe80::1%eth0]:80", nil, "fe80::1"},
		{"headers ignored without trusted proxies", "198.51.100.1", "198.51.100.2", "10.0.0.1:80", nil, "10.0.0.1"},
		{"headers ignored from an untrusted peer", "198.51.100.1", "198.51.100.2", "203.0.113.9:80", lb, "203.0.113.9"},
		{"one trusted hop", "198.51.100.1", "", "10.0.0.1:80", lb, "198.51.100.1"},
		{"client-written entries left of the first untrusted hop are ignored", "6.6.6.6, 198.51.100.1, 10.0.0.2", "", "10.0.0.1:80", lb, "198.51.100.1"},
		{"every hop trusted: left-most", "10.0.0.3, 10.0.0.2", "", "10.0.0.1:80", lb, "10.0.0.3"},
		{"malformed hop stops the walk", "198.51.100.1, unknown, 10.0.0.2", "", "10.0.0.1:80", lb, "10.0.0.2"},
		{"xff v6 hop with port", "[2001:db8::5]:1234,10.0.0.2", "", "10.0.0.1:80", lb, "2001:db8::5"},
		{"trusted v6 proxy", "198.51.100.7", "", "[2001:db8:ffff::9]:443", lb, "198.51.100.7"},
		{"real ip from a trusted peer", "", " 198.51.100.2 ", "10.0.0.1:80", lb, "198.51.100.2"},
		{"trusted peer without headers", "", "", "10.0.0.1:80", lb, "10.0.0.1"},
		{"nothing", "", "", "", lb, ""},
		{"garbage peer", "", "", "not-an-ip", nil, ""},
		{"unspecified peer", "", "", "0.0.0.0:80", nil, ""},
		{"unix socket peer", "", "", "@", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ClientIP(tt.forwardedFor, tt.realIP, tt.peer, tt.trusted)
			if tt.want == "" {
				if ok || got.IsValid() {
					t.Fatalf("ClientIP = %v, %v; want invalid, false", got, ok)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tt.want) {
				t.Fatalf("ClientIP = %v, %v; want %s, true", got, ok, tt.want)
			}
		})
	}
}

func TestTruncateIP(t *testing.T) {
	for in, want := range map[string]string{
		"81.2.69.142": "81.2.69.0", "::ffff:81.2.69.142": "81.2.69.0", "2001:db8:1234:5678::1": "2001:db8:1234::", "fe80::1%eth0": "fe80::",
	} {
		if got := TruncateIP(netip.MustParseAddr(in)); got != netip.MustParseAddr(want) {
			t.Errorf("TruncateIP(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies([]string{"10.1.2.3/8", " 192.0.2.7 ", "", "2001:db8::/32"})
	if err != nil || len(got) != 3 || got[0].String() != "10.0.0.0/8" || got[1].String() != "192.0.2.7/32" || got[2].String() != "2001:db8::/32" {
		t.Fatalf("ParseTrustedProxies = %v, %v", got, err)
	}
	if _, err := ParseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Fatal("a bad CIDR parsed")
	}
}
