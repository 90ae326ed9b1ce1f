package enrich

import (
	"net/netip"
	"strings"
)

// ClientIP picks the visitor's IP address from what the edge saw.
//
// When trustProxy is true (ingest runs behind a load balancer or proxy that
// sets these headers) it returns the left-most valid address in forwardedFor
// (X-Forwarded-For, comma-separated, entries may carry a port), else the
// X-Real-IP value, else the peer address. When trustProxy is false the headers
// are ignored, since any client can set them, and only the peer counts. peer
// may be "host:port" or a bare address.
//
// The address is returned without IPv6 zone and with IPv4-mapped IPv6
// addresses unmapped. Unspecified addresses (0.0.0.0, ::) are not valid.
// ok is false when no valid address was found.
func ClientIP(forwardedFor, realIP, peer string, trustProxy bool) (ip netip.Addr, ok bool) {
	if trustProxy {
		for part := range strings.SplitSeq(forwardedFor, ",") {
			if ip, ok := parseIP(part); ok {
				return ip, true
			}
		}
		if ip, ok := parseIP(realIP); ok {
			return ip, true
		}
	}
	return parseIP(peer)
}

// parseIP parses an address written as "addr", "addr:port", "[v6]" or
// "[v6]:port", normalised as described at ClientIP.
func parseIP(s string) (netip.Addr, bool) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if s == "" {
		return netip.Addr{}, false
	}
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(s); err == nil {
		ip = ap.Addr()
	} else {
		if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
			s = s[1 : len(s)-1]
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, false
		}
		ip = a
	}
	ip = normalizeIP(ip)
	if !ip.IsValid() || ip.IsUnspecified() {
		return netip.Addr{}, false
	}
	return ip, true
}

// normalizeIP unmaps IPv4-mapped IPv6 addresses and drops any IPv6 zone.
func normalizeIP(ip netip.Addr) netip.Addr {
	return ip.Unmap().WithZone("")
}
