package enrich

import (
	"net/netip"
	"strings"
)

// ClientIP picks the visitor's IP address from what the edge saw.
//
// Only configured proxies are believed: when the TCP peer is in trusted (the
// load balancers and proxies in front of ingest), X-Forwarded-For is read
// from the right, hop by hop, while each hop is itself trusted; the first
// hop that is not trusted is the client (an address the client wrote into
// the header itself lies further left and is never reached). When every hop
// is trusted, the left-most one is the client. Without an X-Forwarded-For
// a trusted peer's X-Real-IP is used. When the peer is not trusted, or
// trusted is empty, the headers are ignored, since any client can set them,
// and only the peer counts. forwardedFor is the comma-joined value of every
// X-Forwarded-For header; peer may be "host:port" or a bare address.
//
// The address is returned without IPv6 zone and with IPv4-mapped IPv6
// addresses unmapped. Unspecified addresses (0.0.0.0, ::) are not valid.
// ok is false when no valid address was found.
func ClientIP(forwardedFor, realIP, peer string, trusted []netip.Prefix) (ip netip.Addr, ok bool) {
	ip, ok = parseIP(peer)
	if !ok || !isTrusted(ip, trusted) {
		return ip, ok
	}
	hops := strings.Split(forwardedFor, ",")
	if strings.TrimSpace(forwardedFor) == "" {
		if r, ok := parseIP(realIP); ok {
			return r, true
		}
		return ip, true
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := parseIP(hops[i])
		if !ok {
			// A malformed hop: nothing left of it can be believed.
			return ip, true
		}
		ip = hop
		if !isTrusted(hop, trusted) {
			return ip, true
		}
	}
	return ip, true
}

// ParseTrustedProxies parses comma-separated CIDRs or addresses
// (PARLEY_INGEST_TRUSTED_PROXIES).
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		a = normalizeIP(a)
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// TruncateIP keeps the network part of an address, as stored in the event
// log: /24 of IPv4, /48 of IPv6 (81.2.69.142 → 81.2.69.0).
func TruncateIP(ip netip.Addr) netip.Addr {
	ip = normalizeIP(ip)
	bits := 24
	if ip.Is6() {
		bits = 48
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Addr{}
	}
	return p.Addr()
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
