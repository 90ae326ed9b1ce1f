package enrich

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// writeTestDB writes a MaxMind DB of the given type with records for the
// given networks and returns its path.
func writeTestDB(t *testing.T, dbType string, records map[string]mmdbtype.Map) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            dbType,
		Languages:               []string{"en"},
		IncludeReservedNetworks: true, // so a private range can be stored, and must still be refused
	})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, rec := range records {
		_, network, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(network, rec); err != nil {
			t.Fatalf("insert %s: %v", cidr, err)
		}
	}
	path := filepath.Join(t.TempDir(), "test.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func cityRecord(country, subISO, subName, city string) mmdbtype.Map {
	rec := mmdbtype.Map{}
	if country != "" {
		rec["country"] = mmdbtype.Map{"iso_code": mmdbtype.String(country)}
	}
	if subISO != "" || subName != "" {
		sub := mmdbtype.Map{}
		if subISO != "" {
			sub["iso_code"] = mmdbtype.String(subISO)
		}
		if subName != "" {
			sub["names"] = mmdbtype.Map{"en": mmdbtype.String(subName)}
		}
		rec["subdivisions"] = mmdbtype.Slice{sub}
	}
	if city != "" {
		rec["city"] = mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(city)}}
	}
	return rec
}

// openTestGeoIP opens a City database with a few known networks.
func openTestGeoIP(t *testing.T) *GeoIP {
	t.Helper()
	path := writeTestDB(t, "GeoIP2-City", map[string]mmdbtype.Map{
		"81.2.69.0/24":     cityRecord("GB", "ENG", "England", "London"),
		"2a01:4f8::/32":    cityRecord("DE", "BY", "", "Nuremberg"),
		"89.160.20.128/25": {"continent": mmdbtype.Map{"code": mmdbtype.String("EU")}},
		"10.0.0.0/8":       cityRecord("ZZ", "", "Private", "Nowhere"),
	})
	g, err := OpenGeoIP(path)
	if err != nil {
		t.Fatalf("OpenGeoIP: %v", err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

func TestGeoIPLocate(t *testing.T) {
	g := openTestGeoIP(t)
	// The private network is in the database; Locate must refuse it anyway.
	if rec, err := g.reader.City(netip.MustParseAddr("10.1.2.3")); err != nil || rec.Country.ISOCode != "ZZ" {
		t.Fatalf("test database lacks the private record: %v, %v", rec, err)
	}
	tests := []struct {
		ip   string
		want *eventv1.Location // nil means not found
	}{
		{"81.2.69.142", &eventv1.Location{Country: "GB", Region: "England", City: "London"}},
		{"::ffff:81.2.69.142", &eventv1.Location{Country: "GB", Region: "England", City: "London"}},
		{"2a01:4f8:1:2::3", &eventv1.Location{Country: "DE", Region: "BY", City: "Nuremberg"}}, // region falls back to ISO code
		{"1.1.1.1", nil},       // not in the database
		{"89.160.20.129", nil}, // record without country, region or city
		{"10.1.2.3", nil},      // private, even though the database has it
		{"127.0.0.1", nil},     // loopback
		{"::1", nil},           // loopback
		{"0.0.0.0", nil},       // unspecified
		{"169.254.1.1", nil},   // link-local
		{"fd00::1", nil},       // unique local
		{"2001:db8::1", nil},   // not in the database
		{"ff02::1", nil},       // multicast
		{"192.168.1.10", nil},  // private
		{"172.16.0.1", nil},    // private
		{"fe80::1%eth0", nil},  // link-local with zone
		{"2a01:4f9::1", nil},   // next /32, not in the database
		{"81.2.70.1", nil},     // next /24, not in the database
		{"81.2.68.255", nil},   // previous /24, not in the database
		{"89.160.20.127", nil}, // below the continent-only /25
		{"224.0.0.251", nil},   // multicast
		{"100.64.0.1", nil},    // shared address space, not in the database
		{"2a01:4f8::", &eventv1.Location{Country: "DE", Region: "BY", City: "Nuremberg"}},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			loc, ok := g.Locate(netip.MustParseAddr(tt.ip))
			if tt.want == nil {
				if ok || loc != nil {
					t.Fatalf("Locate(%s) = %v, %v; want nil, false", tt.ip, loc, ok)
				}
				return
			}
			if !ok || loc.GetCountry() != tt.want.Country || loc.GetRegion() != tt.want.Region || loc.GetCity() != tt.want.City {
				t.Fatalf("Locate(%s) = %v, %v; want %v, true", tt.ip, loc, ok, tt.want)
			}
		})
	}
	if loc, ok := g.Locate(netip.Addr{}); ok || loc != nil {
		t.Fatalf("Locate(invalid) = %v, %v", loc, ok)
	}
}

func TestGeoIPConcurrentAndClose(t *testing.T) {
	g := openTestGeoIP(t)
	ip := netip.MustParseAddr("81.2.69.1")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				g.Locate(ip)
			}
		})
	}
	wg.Wait()

	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if loc, ok := g.Locate(ip); ok || loc != nil {
		t.Fatalf("Locate after Close = %v, %v", loc, ok)
	}

	var nilGeo *GeoIP
	if _, ok := nilGeo.Locate(ip); ok {
		t.Fatal("nil *GeoIP located an address")
	}
	if err := nilGeo.Close(); err != nil {
		t.Fatalf("nil Close: %v", err)
	}
}

func TestOpenGeoIPErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenGeoIP(filepath.Join(dir, "missing.mmdb")); err == nil {
		t.Error("OpenGeoIP(missing file) succeeded")
	}

	junk := filepath.Join(dir, "junk.mmdb")
	if err := os.WriteFile(junk, []byte("not a maxmind database"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenGeoIP(junk); err == nil {
		t.Error("OpenGeoIP(junk) succeeded")
	}

	asn := writeTestDB(t, "GeoLite2-ASN", map[string]mmdbtype.Map{
		"81.2.69.0/24": {"autonomous_system_number": mmdbtype.Uint32(20712)},
	})
	if _, err := OpenGeoIP(asn); err == nil {
		t.Error("OpenGeoIP(ASN database) succeeded")
	} else {
		t.Logf("ASN database: %v", err)
	}

	unknown := writeTestDB(t, "Parley-Test", map[string]mmdbtype.Map{
		"81.2.69.0/24": cityRecord("GB", "", "", "London"),
	})
	if _, err := OpenGeoIP(unknown); err == nil {
		t.Error("OpenGeoIP(unknown database type) succeeded")
	}
}

func TestNoLocator(t *testing.T) {
	if loc, ok := (NoLocator{}).Locate(netip.MustParseAddr("81.2.69.1")); ok || loc != nil {
		t.Fatalf("NoLocator.Locate = %v, %v", loc, ok)
	}
}
