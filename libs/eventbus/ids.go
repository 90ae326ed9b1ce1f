package eventbus

import (
	"strings"

	"github.com/google/uuid"
)

// derivedNamespace is the UUIDv5 namespace of derived event ids.
var derivedNamespace = uuid.MustParse("6f1c1d2e-8a51-4c6b-9a7e-3c1f0b9f2a10")

// NewEventID returns a new time-ordered event id (UUIDv7).
func NewEventID() string { return uuid.Must(uuid.NewV7()).String() }

// DerivedEventID returns the deterministic id of a tenant's event derived
// from another: the same tenant, cause and kind always yield the same id, so
// a redelivered input produces a duplicate that JetStream drops. The tenant
// is part of the name, so no two tenants derive the same id for one cause.
func DerivedEventID(tenant, causationID, kind string) string {
	return uuid.NewSHA1(derivedNamespace, []byte(tenant+"/"+causationID+"/"+kind)).String()
}

// ClientEventID maps a client-supplied idempotency key to a deterministic
// event id, scoped by tenant and conversation so keys never collide across
// them.
func ClientEventID(tenant, conversation, clientKey string) string {
	return uuid.NewSHA1(derivedNamespace, []byte("client/"+tenant+"/"+conversation+"/"+clientKey)).String()
}

// MsgID is the deduplication key of a tenant's event, sent as Nats-Msg-Id:
// "<tenant>/<event id>". Event ids are chosen by clients, so JetStream's
// duplicate detection must never compare them across tenants; every
// publisher and every reader of Nats-Msg-Id goes through this function.
// Tenant ids hold no "/", so the key is unambiguous. JetStream sets no
// length limit on Nats-Msg-Id; the key counts toward max_payload and the
// stream's duplicate table (at most 64+1+36 bytes for a UUID event id).
func MsgID(tenant, eventID string) string { return tenant + "/" + eventID }

// EventIDOfMsgID returns the event id that msgID, the Nats-Msg-Id of a
// message on one of tenant's subjects, names: the part after "<tenant>/".
// Messages stored before deduplication keys carried the tenant hold the bare
// event id; on the tenant's own subject that is the tenant's event, so it is
// returned as is. Another tenant's key yields "".
func EventIDOfMsgID(tenant, msgID string) string {
	if id, ok := strings.CutPrefix(msgID, tenant+"/"); ok {
		return id
	}
	if strings.Contains(msgID, "/") {
		return ""
	}
	return msgID
}
