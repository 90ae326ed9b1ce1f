package enrich

import (
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	tests := []struct {
		name         string
		forwardedFor string
		realIP       string
		peer         string
		trustProxy   bool
		want         string // "" means not ok
	}{
		{"peer host:port", "", "", "203.0.113.7:51234", false, "203.0.113.7"},
		{"peer bare v4", "", "", "203.0.113.7", false, "203.0.113.7"},
		{"peer v6 with port", "", "", "[2001:db8::1]:443", false, "2001:db8::1"},
		{"peer bare v6", "", "", "2001:db8::1", false, "2001:db8::1"},
		{"peer bracketed v6", "", "", "[2001:db8::1]", false, "2001:db8::1"},
		{"peer mapped v4", "", "", "[::ffff:198.51.100.4]:80", false, "198.51.100.4"},
		{"peer zone dropped", "", "", "[fe80::1%eth0]:80", false, "fe80::1"},
		{"headers ignored without trust", "198.51.100.1", "198.51.100.2", "10.0.0.1:80", false, "10.0.0.1"},
		{"xff left-most", "198.51.100.1, 10.0.0.2, 10.0.0.3", "198.51.100.2", "10.0.0.1:80", true, "198.51.100.1"},
		{"xff skips junk", "unknown, , 198.51.100.9:8080, 10.0.0.2", "", "10.0.0.1:80", true, "198.51.100.9"},
		{"xff v6", "[2001:db8::5]:1234,10.0.0.2", "", "10.0.0.1:80", true, "2001:db8::5"},
		{"xff unspecified skipped", "0.0.0.0, 198.51.100.3", "", "10.0.0.1:80", true, "198.51.100.3"},
		{"real ip fallback", "garbage", " 198.51.100.2 ", "10.0.0.1:80", true, "198.51.100.2"},
		{"peer fallback", "", "", "10.0.0.1:80", true, "10.0.0.1"},
		{"nothing", "", "", "", true, ""},
		{"garbage peer", "", "", "not-an-ip", false, ""},
		{"unspecified peer", "", "", "0.0.0.0:80", false, ""},
		{"unix socket peer", "", "", "@", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ClientIP(tt.forwardedFor, tt.realIP, tt.peer, tt.trustProxy)
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
