package enrich

import (
	"strings"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

func TestParseUserAgent(t *testing.T) {
	const (
		unspecified = eventv1.Platform_PLATFORM_UNSPECIFIED
		desktop     = eventv1.Platform_PLATFORM_DESKTOP
		mobileWeb   = eventv1.Platform_PLATFORM_MOBILE_WEB
		app         = eventv1.Platform_PLATFORM_APP
	)
	tests := []struct {
		name       string
		ua         string
		platform   eventv1.Platform
		deviceType string
	}{
		{"chrome windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", desktop, DeviceDesktop},
		{"edge windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0", desktop, DeviceDesktop},
		{"safari macos", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15", desktop, DeviceDesktop},
		{"firefox linux", "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", desktop, DeviceDesktop},
		{"chrome os", "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", desktop, DeviceDesktop},
		{"ie11", "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko", desktop, DeviceDesktop},
		{"iphone safari", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", mobileWeb, DeviceMobile},
		{"iphone web view", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", mobileWeb, DeviceMobile},
		{"android chrome phone", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36", mobileWeb, DeviceMobile},
		{"android firefox phone", "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0", mobileWeb, DeviceMobile},
		{"opera mini android", "Opera/9.80 (Android; Opera Mini/7.5.33361/31.1448; U; en) Presto/2.8.119 Version/11.1010", mobileWeb, DeviceMobile},
		{"ipad safari", "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", mobileWeb, DeviceTablet},
		{"android chrome tablet", "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", mobileWeb, DeviceTablet},
		{"android firefox tablet", "Mozilla/5.0 (Android 14; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0", mobileWeb, DeviceTablet},
		{"googlebot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", unspecified, DeviceBot},
		{"googlebot smartphone", "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.201 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", unspecified, DeviceBot},
		{"bingbot", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", unspecified, DeviceBot},
		{"headless chrome", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36", unspecified, DeviceBot},
		{"okhttp", "okhttp/4.12.0", app, DeviceMobile},
		{"dalvik", "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UD1A.230803.041)", app, DeviceMobile},
		{"ios app", "MyApp/1.2 (iPhone; iOS 17.0)", app, DeviceMobile},
		{"ipad app", "MyApp/1.2 (iPad; iPadOS 17.0)", app, DeviceTablet},
		{"cfnetwork", "MyApp/3.1 CFNetwork/1490.0.4 Darwin/23.2.0", app, DeviceMobile},
		{"curl", "curl/8.4.0", unspecified, ""},
		{"grpc", "grpc-go/1.85.0", unspecified, ""},
		{"bare mozilla", "Mozilla/5.0", unspecified, ""},
		{"empty", "", unspecified, ""},
		{"blank", "   ", unspecified, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			platform, deviceType := ParseUserAgent(tt.ua)
			if platform != tt.platform || deviceType != tt.deviceType {
				t.Errorf("ParseUserAgent(%q) = %v, %q; want %v, %q", tt.ua, platform, deviceType, tt.platform, tt.deviceType)
			}
		})
	}
}

func TestParseUserAgentLong(t *testing.T) {
	ua := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 " +
		strings.Repeat("x", 1<<20)
	if platform, deviceType := ParseUserAgent(ua); platform != eventv1.Platform_PLATFORM_DESKTOP || deviceType != DeviceDesktop {
		t.Errorf("ParseUserAgent(long) = %v, %q", platform, deviceType)
	}
}
