package enrich

import (
	"net/netip"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Request is what the edge saw of the call that carried an event. Zero values
// mean unknown; leave them zero when the caller is a server relaying for a
// visitor (its address and user agent are not the visitor's).
type Request struct {
	// IP is the client address, e.g. from ClientIP.
	IP netip.Addr
	// UserAgent is the User-Agent header of the call.
	UserAgent string
	// TenantID is the caller's tenant (it keys display names).
	TenantID string
}

// Enricher fills the metadata of ConversationStarted events. It is safe for
// concurrent use if its Locator is.
type Enricher struct {
	loc Locator
	// nameSecret keys display names per tenant (nil: legacy DisplayName).
	nameSecret []byte
}

// New returns an Enricher that resolves locations with loc; nil means no
// GeoIP database (locations are left unset).
func New(loc Locator) *Enricher {
	if loc == nil {
		loc = NoLocator{}
	}
	return &Enricher{loc: loc}
}

// WithNameSecret makes e derive display names with KeyedDisplayName under
// NameKey(secret, tenant); an empty secret keeps the legacy DisplayName.
func (e *Enricher) WithNameSecret(secret []byte) *Enricher {
	if len(secret) > 0 {
		e.nameSecret = secret
	}
	return e
}

// displayName is the name of token for tenant.
func (e *Enricher) displayName(tenantID, token string) string {
	if e.nameSecret == nil {
		return DisplayName(token)
	}
	return KeyedDisplayName(NameKey(e.nameSecret, tenantID), token)
}

// Location resolves ip with the configured Locator.
func (e *Enricher) Location(ip netip.Addr) (*eventv1.Location, bool) {
	if e == nil || e.loc == nil {
		return nil, false
	}
	return e.loc.Locate(normalizeIP(ip))
}

// Started enriches cs in place. Values the client set are never overwritten
// (except visitor.ip, truncated); only empty fields are filled:
//
//   - visitor.ip from req.IP; whatever its source, visitor.ip is then
//     truncated to its network (/24 of IPv4, /48 of IPv6; an address that
//     does not parse is dropped), after the location lookup used it whole;
//   - visitor.user_agent from req.UserAgent;
//   - visitor.display_name from visitor.token (see KeyedDisplayName);
//   - platform and device_type from the visitor's user agent (see
//     ParseUserAgent), each independently;
//   - location, when nil or all fields empty, from visitor.ip if it parses,
//     else from req.IP.
//
// A visitor is added to cs only when there is something to put in it.
func (e *Enricher) Started(cs *eventv1.ConversationStarted, req Request) {
	if cs == nil {
		return
	}
	v := cs.GetVisitor()
	if v == nil {
		v = &eventv1.Visitor{}
	}
	reqIP := normalizeIP(req.IP)
	if v.GetIp() == "" && reqIP.IsValid() && !reqIP.IsUnspecified() {
		v.Ip = reqIP.String()
	}
	if v.GetUserAgent() == "" {
		v.UserAgent = req.UserAgent
	}
	if v.GetDisplayName() == "" {
		v.DisplayName = e.displayName(req.TenantID, v.GetToken())
	}
	if cs.Visitor == nil && (v.Ip != "" || v.UserAgent != "") {
		cs.Visitor = v
	}

	if cs.GetPlatform() == eventv1.Platform_PLATFORM_UNSPECIFIED || cs.GetDeviceType() == "" {
		platform, device := ParseUserAgent(v.GetUserAgent())
		if cs.GetPlatform() == eventv1.Platform_PLATFORM_UNSPECIFIED {
			cs.Platform = platform
		}
		if cs.GetDeviceType() == "" {
			cs.DeviceType = device
		}
	}

	if isEmptyLocation(cs.GetLocation()) {
		ip, ok := parseIP(v.GetIp())
		if !ok {
			ip = reqIP
		}
		if loc, ok := e.Location(ip); ok {
			cs.Location = loc
		}
	}
	// The event log keeps the network, not the visitor's address.
	if v.GetIp() != "" {
		if ip, ok := parseIP(v.GetIp()); ok {
			v.Ip = TruncateIP(ip).String()
		} else {
			v.Ip = ""
		}
	}
}
