package eventbus

import (
	"github.com/google/uuid"
)

// derivedNamespace is the UUIDv5 namespace of derived event ids.
var derivedNamespace = uuid.MustParse("6f1c1d2e-8a51-4c6b-9a7e-3c1f0b9f2a10")

// NewEventID returns a new time-ordered event id (UUIDv7).
func NewEventID() string { return uuid.Must(uuid.NewV7()).String() }

// DerivedEventID returns the deterministic id of an event derived from another:
// the same cause and kind always yield the same id, so a redelivered input
// produces a duplicate that JetStream drops.
func DerivedEventID(causationID, kind string) string {
	return uuid.NewSHA1(derivedNamespace, []byte(causationID+"/"+kind)).String()
}

// ClientEventID maps a client-supplied idempotency key to a deterministic
// event id, scoped by tenant and conversation so keys never collide across
// them.
func ClientEventID(tenant, conversation, clientKey string) string {
	return uuid.NewSHA1(derivedNamespace, []byte("client/"+tenant+"/"+conversation+"/"+clientKey)).String()
}
