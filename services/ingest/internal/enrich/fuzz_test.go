package enrich

import (
	"net/netip"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

func FuzzParseUserAgent(f *testing.F) {
	for _, s := range []string{
		"", " ", "Mozilla/5.0", "okhttp/4.12.0", "MyApp/1.2 (iPhone; iOS 17.0)",
		iphoneUA, windowsUA,
		"Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
		"Opera/9.80 (Android; Opera Mini/7.5.33361/31.1448; U; en) Presto/2.8.119 Version/11.1010",
		"Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UD1A.230803.041)",
		"Mozilla/5.0 (((((", "a (b; c) [d] (e", "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ua string) {
		platform, deviceType := ParseUserAgent(ua)
		switch deviceType {
		case "", DeviceDesktop, DeviceMobile, DeviceTablet, DeviceBot:
		default:
			t.Fatalf("ParseUserAgent(%q) device type %q", ua, deviceType)
		}
		if _, known := eventv1.Platform_name[int32(platform)]; !known {
			t.Fatalf("ParseUserAgent(%q) platform %v", ua, platform)
		}
		// Consistency between the two results.
		switch {
		case deviceType == "" || deviceType == DeviceBot:
			if platform != eventv1.Platform_PLATFORM_UNSPECIFIED {
				t.Fatalf("ParseUserAgent(%q) = %v, %q", ua, platform, deviceType)
			}
		case deviceType == DeviceDesktop:
			if platform != eventv1.Platform_PLATFORM_DESKTOP {
				t.Fatalf("ParseUserAgent(%q) = %v, %q", ua, platform, deviceType)
			}
		case platform != eventv1.Platform_PLATFORM_MOBILE_WEB && platform != eventv1.Platform_PLATFORM_APP:
			t.Fatalf("ParseUserAgent(%q) = %v, %q", ua, platform, deviceType)
		}
		p2, d2 := ParseUserAgent(ua)
		if p2 != platform || d2 != deviceType {
			t.Fatalf("ParseUserAgent(%q) not deterministic: %v, %q then %v, %q", ua, platform, deviceType, p2, d2)
		}
	})
}

func FuzzClientIP(f *testing.F) {
	f.Add("198.51.100.1, 10.0.0.2", "198.51.100.2", "10.0.0.1:80", true)
	f.Add("", "", "[2001:db8::1%eth0]:443", false)
	f.Add("unknown,,[::ffff:1.2.3.4]:5", " ", "0.0.0.0", true)
	f.Add(`"[fe80::1]"`, "[::]", "@", true)
	lb := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	f.Fuzz(func(t *testing.T, forwardedFor, realIP, peer string, trustProxy bool) {
		var trusted []netip.Prefix
		if trustProxy {
			trusted = lb
		}
		ip, ok := ClientIP(forwardedFor, realIP, peer, trusted)
		if ok != ip.IsValid() {
			t.Fatalf("ClientIP = %v, %v: ok must match validity", ip, ok)
		}
		if ok && (ip.Zone() != "" || ip.Is4In6() || ip.IsUnspecified()) {
			t.Fatalf("ClientIP = %v: not normalized", ip)
		}
		ip2, ok2 := ClientIP(forwardedFor, realIP, peer, trusted)
		if ip2 != ip || ok2 != ok {
			t.Fatalf("ClientIP not deterministic: %v, %v then %v, %v", ip, ok, ip2, ok2)
		}
		peerIP, peerOK := ClientIP("", "", peer, nil)
		if (!peerOK || !isTrusted(peerIP, trusted)) && (ip != peerIP || ok != peerOK) {
			t.Fatalf("ClientIP = %v, %v from an untrusted peer; the peer alone gives %v, %v", ip, ok, peerIP, peerOK)
		}
		if ok != peerOK {
			t.Fatalf("ClientIP ok %v, but peer ok %v", ok, peerOK)
		}
	})
}
