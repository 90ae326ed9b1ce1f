package enrich

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/oschwald/geoip2-golang/v2"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Locator resolves an IP address to a coarse location. ok is false when the
// address has no known location.
type Locator interface {
	Locate(ip netip.Addr) (loc *eventv1.Location, ok bool)
}

// NoLocator is the Locator used when no GeoIP database is configured: it
// never finds a location.
type NoLocator struct{}

// Locate always reports no location.
func (NoLocator) Locate(netip.Addr) (*eventv1.Location, bool) { return nil, false }

// GeoIP is a Locator backed by a MaxMind-format City database (GeoIP2 or
// GeoLite2 City, DB-IP City Lite). It is safe for concurrent use.
type GeoIP struct {
	mu     sync.RWMutex
	reader *geoip2.Reader // nil once closed
}

// OpenGeoIP opens the City database at path. It fails when the file is not a
// MaxMind DB or holds a database type without city data (e.g. ASN).
func OpenGeoIP(path string) (*GeoIP, error) {
	r, err := geoip2.Open(path)
	if err != nil {
		if r != nil {
			_ = r.Close()
		}
		return nil, fmt.Errorf("enrich: open GeoIP database %q: %w", path, err)
	}
	// City refuses database types that cannot answer it; fail at startup
	// rather than on every lookup.
	if _, err := r.City(netip.IPv4Unspecified()); err != nil {
		dbType := r.Metadata().DatabaseType
		_ = r.Close()
		return nil, fmt.Errorf("enrich: GeoIP database %q (type %q) has no city data: %w", path, dbType, err)
	}
	return &GeoIP{reader: r}, nil
}

// Locate returns the location of ip: ISO country code, the English name of
// the largest subdivision (its ISO code when it has no English name) and the
// English city name. It reports false for private, loopback, link-local,
// multicast and unspecified addresses, for addresses the database does not
// know, after Close, and on a nil *GeoIP.
func (g *GeoIP) Locate(ip netip.Addr) (*eventv1.Location, bool) {
	ip = normalizeIP(ip)
	if g == nil || !locatable(ip) {
		return nil, false
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.reader == nil {
		return nil, false
	}
	rec, err := g.reader.City(ip)
	if err != nil || rec == nil {
		return nil, false
	}
	loc := &eventv1.Location{
		Country: rec.Country.ISOCode,
		City:    rec.City.Names.English,
	}
	if len(rec.Subdivisions) > 0 {
		sub := rec.Subdivisions[0]
		loc.Region = sub.Names.English
		if loc.Region == "" {
			loc.Region = sub.ISOCode
		}
	}
	if isEmptyLocation(loc) {
		return nil, false
	}
	return loc, true
}

// Close releases the database. Locate reports false afterwards. Close is
// idempotent and safe to call concurrently with Locate.
func (g *GeoIP) Close() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reader == nil {
		return nil
	}
	err := g.reader.Close()
	g.reader = nil
	if err != nil {
		return fmt.Errorf("enrich: close GeoIP database: %w", err)
	}
	return nil
}

// locatable reports whether ip is a public unicast address worth a lookup.
func locatable(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsUnspecified() && !ip.IsLoopback() && !ip.IsPrivate() &&
		!ip.IsLinkLocalUnicast() && !ip.IsMulticast()
}

// isEmptyLocation reports whether loc is nil or has no field set.
func isEmptyLocation(loc *eventv1.Location) bool {
	return loc.GetCountry() == "" && loc.GetRegion() == "" && loc.GetCity() == ""
}
