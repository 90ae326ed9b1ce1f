package enrich

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
)

// DisplayName returns a friendly anonymous name such as "Amber Otter 42" for a
// visitor token. The name is derived from the SHA-256 of the token, so the same
// token always yields the same name. An empty token yields "".
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
