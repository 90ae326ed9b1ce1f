package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// Policy says which targets webhooks may reach.
type Policy struct {
	// AllowPrivate allows loopback, private, link-local and metadata
	// addresses (the local stack, for demos).
	AllowPrivate bool
	// AllowHTTP allows http:// URLs; otherwise only https://.
	AllowHTTP bool
}

// ErrRefused marks a connection refused by the policy.
var ErrRefused = errors.New("refused by the SSRF policy")

// blockedNets are refused besides what netip classifies (loopback,
// private, link-local, multicast, unspecified).
var blockedNets = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT (Alibaba Cloud's metadata 100.100.100.200)
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 (embeds IPv4)
	netip.MustParsePrefix("64:ff9b:1::/48"), // local NAT64
	netip.MustParsePrefix("2002::/16"),      // 6to4 (embeds IPv4)
	netip.MustParsePrefix("100::/64"),       // discard
}

// Blocked returns why ip may not be reached ("" when it may).
func Blocked(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "an invalid address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsPrivate():
		return "a private address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address (cloud metadata)"
	case ip.IsUnspecified():
		return "an unspecified address"
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return "a multicast address"
	}
	for _, p := range blockedNets {
		if p.Contains(ip) {
			return "a reserved address"
		}
	}
	return ""
}

// CheckURL checks a webhook URL when a subscription is saved; it returns
// what is wrong ("" when nothing). Host names are checked again on every
// connection (Control), after DNS resolution.
func (p Policy) CheckURL(raw string) string {
	if len(raw) > 2048 {
		return "must be at most 2048 characters"
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "must be an absolute URL (https://host/path)"
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && p.AllowHTTP:
	case u.Scheme == "http":
		return "must use https"
	default:
		return "must be an http(s) URL"
	}
	if u.User != nil {
		return "must not hold credentials"
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if why := Blocked(ip); why != "" && !p.AllowPrivate {
			return "must not point to " + why
		}
	} else if !p.AllowPrivate && (strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost")) {
		return "must not point to a loopback address"
	}
	return ""
}

// Control is a net.Dialer Control function: it refuses a connection to a
// blocked address, checked on the address being connected to, after DNS
// resolution, so a name that resolves to an internal address (DNS
// rebinding) is refused too.
func (p Policy) Control(_, address string, _ syscall.RawConn) error {
	if p.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrRefused, address)
	}
	if why := Blocked(ap.Addr()); why != "" {
		return fmt.Errorf("%w: %s is %s", ErrRefused, ap.Addr(), why)
	}
	return nil
}

// Dialer returns a dialer that applies the policy.
func (p Policy) Dialer(d net.Dialer) *net.Dialer {
	d.Control = p.Control
	return &d
}
