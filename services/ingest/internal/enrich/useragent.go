package enrich

import (
	"strings"
	"unicode"

	"github.com/mssola/useragent"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Device classes ParseUserAgent reports; "" means unknown.
const (
	DeviceDesktop = "desktop"
	DeviceMobile  = "mobile"
	DeviceTablet  = "tablet"
	DeviceBot     = "bot"
)

// maxUserAgentBytes bounds the part of a user agent that is parsed. Real user
// agents are a few hundred bytes; the bound keeps hostile input cheap.
const maxUserAgentBytes = 1024

// ParseUserAgent classifies a User-Agent header value.
//
// Browsers on phones and tablets are PLATFORM_MOBILE_WEB, other browsers
// PLATFORM_DESKTOP. Native apps, recognised as a user agent without a browser
// engine that names a mobile OS or a mobile HTTP stack (okhttp, Dalvik,
// CFNetwork), are PLATFORM_APP. In-app web views carry a browser engine and
// count as mobile web. Crawlers and headless browsers are "bot" with
// PLATFORM_UNSPECIFIED. Anything else, including an empty user agent, is
// PLATFORM_UNSPECIFIED with device type "".
//
// deviceType is one of DeviceDesktop, DeviceMobile, DeviceTablet, DeviceBot or
// "". iPadOS Safari in its default desktop mode is indistinguishable from macOS
// and reports as desktop.
func ParseUserAgent(ua string) (platform eventv1.Platform, deviceType string) {
	ua = strings.TrimSpace(ua)
	if len(ua) > maxUserAgentBytes {
		ua = ua[:maxUserAgentBytes]
	}
	if ua == "" {
		return eventv1.Platform_PLATFORM_UNSPECIFIED, ""
	}
	lower := strings.ToLower(ua)
	words := uaWords(lower)
	parsed := useragent.New(ua)

	if parsed.Bot() || isBot(lower, words) {
		return eventv1.Platform_PLATFORM_UNSPECIFIED, DeviceBot
	}

	engine, _ := parsed.Engine()
	if browserEngine(engine) {
		switch {
		case parsed.Platform() == "iPad" || isTablet(lower, words):
			return eventv1.Platform_PLATFORM_MOBILE_WEB, DeviceTablet
		case parsed.Mobile() || isMobile(lower, words):
			return eventv1.Platform_PLATFORM_MOBILE_WEB, DeviceMobile
		default:
			return eventv1.Platform_PLATFORM_DESKTOP, DeviceDesktop
		}
	}

	if isNativeApp(words) {
		if words["ipad"] || words["tablet"] {
			return eventv1.Platform_PLATFORM_APP, DeviceTablet
		}
		return eventv1.Platform_PLATFORM_APP, DeviceMobile
	}
	return eventv1.Platform_PLATFORM_UNSPECIFIED, ""
}

// browserEngine reports whether engine, as named by the parser, renders web
// pages. The parser also puts the second product token of non-browser user
// agents (e.g. "CFNetwork") into the engine, hence the explicit list.
func browserEngine(engine string) bool {
	switch engine {
	case "AppleWebKit", "Gecko", "Trident", "EdgeHTML", "Presto", "Blink":
		return true
	}
	return false
}

// uaWords splits a lower-cased user agent into its alphanumeric words.
func uaWords(lower string) map[string]bool {
	fields := strings.FieldsFunc(lower, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	words := make(map[string]bool, len(fields))
	for _, f := range fields {
		words[f] = true
	}
	return words
}

// isBot catches crawlers the parser misses, e.g. Googlebot's smartphone user
// agent, which otherwise looks like Chrome on Android.
func isBot(lower string, words map[string]bool) bool {
	if strings.Contains(lower, "+http") {
		return true // crawlers link their documentation: "+http://www.google.com/bot.html"
	}
	for w := range words {
		switch {
		case strings.HasSuffix(w, "bot") && w != "cubot": // Googlebot, bingbot, ...; Cubot is a phone brand
			return true
		case strings.Contains(w, "crawler"), strings.Contains(w, "spider"),
			strings.HasPrefix(w, "headless"), w == "slurp", w == "facebookexternalhit":
			return true
		}
	}
	return false
}

// isTablet reports tablet browsers: Android without the "Mobile" token (Opera
// Mini omits it on phones too), Firefox's "Tablet" token, and Kindle devices.
func isTablet(lower string, words map[string]bool) bool {
	switch {
	case words["ipad"], words["kindle"], words["silk"]:
		return true
	case strings.Contains(lower, "; tablet;"), strings.Contains(lower, "(tablet;"):
		return true
	case words["android"] && !words["mobile"] && !words["mobi"] && !strings.Contains(lower, "opera mini"):
		return true
	}
	return false
}

// isMobile reports phone browsers the parser did not flag as mobile.
func isMobile(lower string, words map[string]bool) bool {
	return words["mobile"] || words["mobi"] || words["iphone"] || words["ipod"] ||
		words["android"] || words["iemobile"] || strings.Contains(lower, "opera mini")
}

// isNativeApp reports user agents of native apps and their HTTP stacks.
func isNativeApp(words map[string]bool) bool {
	for _, w := range [...]string{
		"iphone", "ipad", "ipod", "ios", "ipados", "android",
		"okhttp", "dalvik", "cfnetwork", "alamofire",
	} {
		if words[w] {
			return true
		}
	}
	return false
}
