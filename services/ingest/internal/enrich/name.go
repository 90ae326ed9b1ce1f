package enrich

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"strconv"
)

// KeyedNameMax is the largest number of a keyed display name: names are
// 64 adjectives × 64 animals × 9999 numbers (about 41 million).
const KeyedNameMax = 9999

// NameKey derives a tenant's display-name key from the service secret, so
// the same token gets unrelated names in different tenants.
func NameKey(secret []byte, tenantID string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("parley-display-name\x00"))
	m.Write([]byte(tenantID))
	return m.Sum(nil)
}

// KeyedDisplayName returns a friendly anonymous name such as
// "Amber Otter 4821" for a visitor token: words and number come from the
// HMAC-SHA256 of the token under the tenant's key (NameKey), so nobody
// without the secret can recompute a name from a guessable token. An empty
// token yields "".
func KeyedDisplayName(key []byte, token string) string {
	if token == "" {
		return ""
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(token))
	sum := m.Sum(nil)
	adj := adjectives[int(sum[0])%len(adjectives)]
	animal := animals[int(sum[1])%len(animals)]
	n := binary.BigEndian.Uint64(sum[2:10])%KeyedNameMax + 1
	return adj + " " + animal + " " + strconv.FormatUint(n, 10)
}

// DisplayName is the legacy unkeyed name ("Amber Otter 42" from the plain
// SHA-256 of the token), used only when ingest has no
// PARLEY_INGEST_NAME_SECRET. An empty token yields "".
func DisplayName(token string) string {
	if token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	adj := adjectives[int(sum[0])%len(adjectives)]
	animal := animals[int(sum[1])%len(animals)]
	n := binary.BigEndian.Uint64(sum[2:10])%99 + 1
	return adj + " " + animal + " " + strconv.FormatUint(n, 10)
}

// adjectives and animals are the word lists of DisplayName. They are read-only:
// changing them renames every visitor. Both have 64 entries so that a hash byte
// picks a word without bias.
var (
	adjectives = [...]string{
		"Amber", "Azure", "Bold", "Brave", "Breezy", "Bright", "Brisk", "Calm",
		"Cheerful", "Clever", "Cosmic", "Cozy", "Crimson", "Curious", "Daring", "Dapper",
		"Eager", "Emerald", "Fancy", "Fearless", "Friendly", "Gentle", "Giddy", "Golden",
		"Graceful", "Happy", "Hazel", "Honest", "Humble", "Indigo", "Jolly", "Jovial",
		"Kind", "Lively", "Lucky", "Lunar", "Mellow", "Merry", "Mighty", "Misty",
		"Nimble", "Noble", "Olive", "Peppy", "Plucky", "Polite", "Quick", "Quiet",
		"Rapid", "Rosy", "Ruby", "Sandy", "Silver", "Sleek", "Snowy", "Sunny",
		"Swift", "Teal", "Tidy", "Velvet", "Vivid", "Witty", "Zany", "Zesty",
	}
	animals = [...]string{
		"Alpaca", "Badger", "Beaver", "Bison", "Bobcat", "Camel", "Cheetah", "Condor",
		"Coyote", "Crane", "Dingo", "Dolphin", "Eagle", "Falcon", "Ferret", "Finch",
		"Fox", "Gazelle", "Gecko", "Giraffe", "Heron", "Hedgehog", "Ibis", "Iguana",
		"Jaguar", "Kestrel", "Koala", "Lemur", "Leopard", "Llama", "Lynx", "Marmot",
		"Meerkat", "Mongoose", "Moose", "Narwhal", "Newt", "Ocelot", "Octopus", "Orca",
		"Osprey", "Otter", "Owl", "Panda", "Panther", "Pelican", "Penguin", "Puffin",
		"Quokka", "Rabbit", "Raccoon", "Raven", "Robin", "Salmon", "Seal", "Sparrow",
		"Squirrel", "Swan", "Tapir", "Tiger", "Toucan", "Turtle", "Walrus", "Wombat",
	}
)
