package enrich

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

const (
	iphoneUA  = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
	windowsUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)

// mapLocator is a Locator over a fixed table that records what it was asked.
type mapLocator struct {
	table map[netip.Addr]*eventv1.Location
	asked []netip.Addr
}

func (m *mapLocator) Locate(ip netip.Addr) (*eventv1.Location, bool) {
	m.asked = append(m.asked, ip)
	loc, ok := m.table[ip]
	if !ok {
		return nil, false
	}
	return proto.Clone(loc).(*eventv1.Location), true
}

var (
	londonIP = netip.MustParseAddr("81.2.69.142")
	berlinIP = netip.MustParseAddr("85.214.132.117")
	london   = &eventv1.Location{Country: "GB", Region: "England", City: "London"}
	berlin   = &eventv1.Location{Country: "DE", Region: "Berlin", City: "Berlin"}
)

func newTestEnricher() (*Enricher, *mapLocator) {
	loc := &mapLocator{table: map[netip.Addr]*eventv1.Location{londonIP: london, berlinIP: berlin}}
	return New(loc), loc
}

func TestStartedFillsEverything(t *testing.T) {
	e, _ := newTestEnricher()
	cs := &eventv1.ConversationStarted{BotId: "bot-1", Visitor: &eventv1.Visitor{Token: "tok-1"}}
	e.Started(cs, Request{IP: londonIP, UserAgent: iphoneUA})

	want := &eventv1.ConversationStarted{
		BotId:      "bot-1",
		Platform:   eventv1.Platform_PLATFORM_MOBILE_WEB,
		DeviceType: DeviceMobile,
		Visitor: &eventv1.Visitor{
			Token:       "tok-1",
			DisplayName: DisplayName("tok-1"),
			Ip:          "81.2.69.0",
			UserAgent:   iphoneUA,
		},
		Location: london,
	}
	if !proto.Equal(cs, want) {
		t.Fatalf("Started =\n%v\nwant\n%v", cs, want)
	}
}

func TestStartedClientValuesWin(t *testing.T) {
	e, _ := newTestEnricher()
	client := &eventv1.ConversationStarted{
		Platform:   eventv1.Platform_PLATFORM_APP,
		DeviceType: DeviceTablet,
		Visitor: &eventv1.Visitor{
			Token:       "tok-1",
			DisplayName: "Alice",
			Ip:          berlinIP.String(),
			UserAgent:   windowsUA,
		},
		Location: &eventv1.Location{Country: "FR"},
	}
	cs := proto.Clone(client).(*eventv1.ConversationStarted)
	e.Started(cs, Request{IP: londonIP, UserAgent: iphoneUA})
	client.Visitor.Ip = TruncateIP(berlinIP).String() // only the network is kept
	if !proto.Equal(cs, client) {
		t.Fatalf("Started changed client values:\n%v\nwant\n%v", cs, client)
	}
}

func TestStartedVisitorIP(t *testing.T) {
	e, _ := newTestEnricher()

	cs := &eventv1.ConversationStarted{}
	e.Started(cs, Request{IP: netip.MustParseAddr("::ffff:81.2.69.142")})
	if got := cs.GetVisitor().GetIp(); got != "81.2.69.0" {
		t.Errorf("visitor.ip = %q, want the unmapped request IP's /24", got)
	}

	cs = &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Ip: "198.51.100.1"}}
	e.Started(cs, Request{IP: londonIP})
	if got := cs.GetVisitor().GetIp(); got != "198.51.100.0" {
		t.Errorf("visitor.ip = %q, want the client's /24", got)
	}
	cs = &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Ip: "2001:db8:1234:5678::1"}}
	e.Started(cs, Request{})
	if got := cs.GetVisitor().GetIp(); got != "2001:db8:1234::" {
		t.Errorf("visitor.ip = %q, want the client's /48", got)
	}

	cs = &eventv1.ConversationStarted{}
	e.Started(cs, Request{})
	if cs.Visitor != nil {
		t.Errorf("visitor = %v, want none when there is nothing to put in it", cs.Visitor)
	}
}

func TestStartedUserAgent(t *testing.T) {
	e, _ := newTestEnricher()

	cs := &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Token: "t"}}
	e.Started(cs, Request{UserAgent: windowsUA})
	if cs.GetVisitor().GetUserAgent() != windowsUA ||
		cs.GetPlatform() != eventv1.Platform_PLATFORM_DESKTOP || cs.GetDeviceType() != DeviceDesktop {
		t.Errorf("from request UA: ua=%q platform=%v device=%q", cs.GetVisitor().GetUserAgent(), cs.GetPlatform(), cs.GetDeviceType())
	}

	// The visitor's own user agent is what gets classified, not the edge's.
	cs = &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{UserAgent: iphoneUA}}
	e.Started(cs, Request{UserAgent: "grpc-go/1.85.0"})
	if cs.GetVisitor().GetUserAgent() != iphoneUA ||
		cs.GetPlatform() != eventv1.Platform_PLATFORM_MOBILE_WEB || cs.GetDeviceType() != DeviceMobile {
		t.Errorf("from visitor UA: ua=%q platform=%v device=%q", cs.GetVisitor().GetUserAgent(), cs.GetPlatform(), cs.GetDeviceType())
	}

	// Platform and device type are filled independently.
	cs = &eventv1.ConversationStarted{Platform: eventv1.Platform_PLATFORM_APP}
	e.Started(cs, Request{UserAgent: iphoneUA})
	if cs.GetPlatform() != eventv1.Platform_PLATFORM_APP || cs.GetDeviceType() != DeviceMobile {
		t.Errorf("platform set: platform=%v device=%q", cs.GetPlatform(), cs.GetDeviceType())
	}
	cs = &eventv1.ConversationStarted{DeviceType: DeviceTablet}
	e.Started(cs, Request{UserAgent: iphoneUA})
	if cs.GetPlatform() != eventv1.Platform_PLATFORM_MOBILE_WEB || cs.GetDeviceType() != DeviceTablet {
		t.Errorf("device set: platform=%v device=%q", cs.GetPlatform(), cs.GetDeviceType())
	}

	// No user agent anywhere: nothing to classify.
	cs = &eventv1.ConversationStarted{}
	e.Started(cs, Request{})
	if cs.GetPlatform() != eventv1.Platform_PLATFORM_UNSPECIFIED || cs.GetDeviceType() != "" {
		t.Errorf("no UA: platform=%v device=%q", cs.GetPlatform(), cs.GetDeviceType())
	}
}

func TestStartedDisplayName(t *testing.T) {
	e, _ := newTestEnricher()
	cs := &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Token: "tok-9"}}
	e.Started(cs, Request{})
	if got, want := cs.GetVisitor().GetDisplayName(), DisplayName("tok-9"); got != want || got == "" {
		t.Errorf("display_name = %q, want %q", got, want)
	}

	cs = &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Ip: "198.51.100.1"}}
	e.Started(cs, Request{})
	if got := cs.GetVisitor().GetDisplayName(); got != "" {
		t.Errorf("display_name without token = %q, want empty", got)
	}
}

func TestStartedLocation(t *testing.T) {
	t.Run("visitor ip first", func(t *testing.T) {
		e, loc := newTestEnricher()
		cs := &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Ip: berlinIP.String()}}
		e.Started(cs, Request{IP: londonIP})
		if !proto.Equal(cs.GetLocation(), berlin) {
			t.Errorf("location = %v, want %v", cs.GetLocation(), berlin)
		}
		if len(loc.asked) != 1 || loc.asked[0] != berlinIP {
			t.Errorf("locator asked %v, want only %v", loc.asked, berlinIP)
		}
	})
	t.Run("request ip when visitor ip unparsable", func(t *testing.T) {
		e, _ := newTestEnricher()
		cs := &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Ip: "not an ip"}}
		e.Started(cs, Request{IP: londonIP})
		if !proto.Equal(cs.GetLocation(), london) {
			t.Errorf("location = %v, want %v", cs.GetLocation(), london)
		}
		if cs.GetVisitor().GetIp() != "" {
			t.Errorf("unparsable visitor.ip kept: %q", cs.GetVisitor().GetIp())
		}
	})
	t.Run("all-empty location is replaced", func(t *testing.T) {
		e, _ := newTestEnricher()
		cs := &eventv1.ConversationStarted{Location: &eventv1.Location{}}
		e.Started(cs, Request{IP: londonIP})
		if !proto.Equal(cs.GetLocation(), london) {
			t.Errorf("location = %v, want %v", cs.GetLocation(), london)
		}
	})
	t.Run("client location kept", func(t *testing.T) {
		e, loc := newTestEnricher()
		cs := &eventv1.ConversationStarted{Location: &eventv1.Location{City: "Paris"}}
		e.Started(cs, Request{IP: londonIP})
		if cs.GetLocation().GetCity() != "Paris" || cs.GetLocation().GetCountry() != "" {
			t.Errorf("location = %v, want the client's", cs.GetLocation())
		}
		if len(loc.asked) != 0 {
			t.Errorf("locator asked %v, want no lookup", loc.asked)
		}
	})
	t.Run("unknown ip", func(t *testing.T) {
		e, _ := newTestEnricher()
		cs := &eventv1.ConversationStarted{}
		e.Started(cs, Request{IP: netip.MustParseAddr("198.51.100.1")})
		if cs.Location != nil {
			t.Errorf("location = %v, want none", cs.Location)
		}
	})
	t.Run("no locator", func(t *testing.T) {
		cs := &eventv1.ConversationStarted{}
		New(nil).Started(cs, Request{IP: londonIP})
		if cs.Location != nil {
			t.Errorf("location = %v, want none", cs.Location)
		}
		var nilGeo *GeoIP
		New(nilGeo).Started(cs, Request{IP: londonIP})
		if cs.Location != nil {
			t.Errorf("location with nil *GeoIP = %v, want none", cs.Location)
		}
	})
	t.Run("real GeoIP", func(t *testing.T) {
		cs := &eventv1.ConversationStarted{}
		New(openTestGeoIP(t)).Started(cs, Request{IP: netip.MustParseAddr("81.2.69.1")})
		if !proto.Equal(cs.GetLocation(), london) {
			t.Errorf("location = %v, want %v", cs.GetLocation(), london)
		}
	})
}

func TestEnricherLocation(t *testing.T) {
	e, _ := newTestEnricher()
	if loc, ok := e.Location(londonIP); !ok || !proto.Equal(loc, london) {
		t.Errorf("Location(london) = %v, %v", loc, ok)
	}
	if loc, ok := e.Location(netip.MustParseAddr("::ffff:81.2.69.142")); !ok || !proto.Equal(loc, london) {
		t.Errorf("Location(mapped london) = %v, %v", loc, ok)
	}
	if _, ok := e.Location(netip.MustParseAddr("198.51.100.1")); ok {
		t.Error("Location(unknown) found a location")
	}
	if _, ok := New(nil).Location(londonIP); ok {
		t.Error("Location without locator found a location")
	}
	var nilEnricher *Enricher
	if _, ok := nilEnricher.Location(londonIP); ok {
		t.Error("nil Enricher found a location")
	}
}

func TestStartedNil(t *testing.T) {
	e, _ := newTestEnricher()
	e.Started(nil, Request{IP: londonIP, UserAgent: iphoneUA}) // must not panic
}

func TestStartedKeyedDisplayName(t *testing.T) {
	e := New(nil).WithNameSecret([]byte("s"))
	cs := &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Token: "tok-9"}}
	e.Started(cs, Request{TenantID: "acme"})
	if got, want := cs.GetVisitor().GetDisplayName(), KeyedDisplayName(NameKey([]byte("s"), "acme"), "tok-9"); got != want || got == DisplayName("tok-9") {
		t.Fatalf("display name %q, want %q", got, want)
	}
}
