package convstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Binary encoding of a State, several times cheaper to write and read than
// its JSON. The first byte is the format version; fields follow in a fixed
// order (see fields): strings and lists with a uvarint length, integers as
// uvarints (varints where signed), times as a uvarint of nanoseconds + 1
// and a varint of Unix seconds (a single 0 for the zero time), bools as one
// byte, the event id hashes as 8 bytes each. Adding a field means a
// new version: append it to fields under a new version number, and decode
// older versions without it.
const binaryVersion = 3

// Versions: 1; 2 added variable sources, the debug flag, bot response
// times and usage per model; 3 added AgentsPresent.

// MarshalBinary encodes s (implements encoding.BinaryMarshaler).
func (s *State) MarshalBinary() ([]byte, error) { return s.AppendBinary(make([]byte, 0, 512)) }

// AppendBinary appends the encoding of s to b.
func (s *State) AppendBinary(b []byte) ([]byte, error) {
	e := encoder{b: append(b, binaryVersion)}
	s.fields(&e, binaryVersion)
	return e.b, nil
}

// UnmarshalBinary decodes data written by MarshalBinary into s, replacing
// its contents.
func (s *State) UnmarshalBinary(data []byte) error {
	if len(data) == 0 {
		return errors.New("convstate: empty encoding")
	}
	if data[0] < 1 || data[0] > binaryVersion {
		return fmt.Errorf("convstate: unknown encoding version %d", data[0])
	}
	*s = State{}
	d := decoder{b: data[1:]}
	s.fields(&d, data[0])
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("convstate: %d bytes left after decoding", len(d.b))
	}
	return nil
}

// codec is an encoder or a decoder: fields lists every field once, in the
// order of the encoding, and the same code writes and reads.
type codec interface {
	str(*string)
	strs(*[]string)
	strMap(*map[string]string)
	u32(*uint32)
	u64(*uint64)
	u64s(*[]uint64)
	i64(*int64)
	flag(*bool)
	time(*time.Time)
	usage(*[]Usage)
}

// fields lists the fields of an encoding version; a version's fields
// follow those of the versions before it.
func (s *State) fields(c codec, version byte) {
	c.str(&s.TenantID)
	c.str(&s.ConversationID)
	c.time(&s.StartedAt)
	c.time(&s.LastActivityAt)
	c.time(&s.EndedAt)
	c.str(&s.Status)
	c.str(&s.EndReason)
	c.str(&s.EndedBy)

	c.str(&s.BotID)
	c.str(&s.Channel)
	c.str(&s.Platform)
	c.str(&s.Type)
	c.str(&s.DeviceType)

	c.str(&s.VisitorToken)
	c.str(&s.VisitorName)
	c.str(&s.Locale)
	c.str(&s.Country)
	c.str(&s.Region)
	c.str(&s.City)

	c.str(&s.StartPageURL)
	c.str(&s.Referrer)
	c.strs(&s.PageURLs)
	c.strMap(&s.Variables)

	c.u32(&s.VisitorMessages)
	c.u32(&s.BotMessages)
	c.u32(&s.AgentMessages)
	c.u32(&s.SystemMessages)
	c.u32(&s.UnidentifiedCount)
	c.u32(&s.PaidMessages)
	c.str(&s.LastMessageText)
	c.str(&s.LastMessageRole)
	c.time(&s.LastMessageAt)
	c.strs(&s.Intents)
	c.strs(&s.Nodes)

	c.strs(&s.FlowsStarted)
	c.strs(&s.FlowsCompleted)
	c.strs(&s.FlowDrops)
	c.strs(&s.FlowSteps)
	c.strs(&s.Goals)
	c.i64(&s.GoalValue)
	c.u32(&s.Leads)
	c.strs(&s.Markers)

	c.flag(&s.HandoffRequested)
	c.time(&s.HandoffAt)
	c.flag(&s.TakenOver)
	c.time(&s.TakeoverAt)
	c.strs(&s.Agents)
	c.str(&s.AgentName)
	c.flag(&s.OperatorNoResponse)
	c.u32(&s.FirstResponseMS)
	c.u64(&s.ResponseMSSum)
	c.u32(&s.ResponseCount)
	c.u32(&s.MaxResponseMS)

	c.str(&s.Engagement)
	c.flag(&s.Resolved)

	c.strs(&s.Tags)
	c.strs(&s.Labels)
	c.flag(&s.Flagged)

	c.i64(&s.CostMicros)
	c.str(&s.Currency)
	c.u64(&s.InputTokens)
	c.u64(&s.OutputTokens)

	c.u32(&s.EventCount)
	c.u64s(&s.Seen)
	c.u64(&s.LastSeq)
	if version < 2 {
		return
	}
	c.strMap(&s.VariableSources)
	c.flag(&s.DebugEnabled)
	c.u64(&s.BotResponseMSSum)
	c.u32(&s.BotResponseCount)
	c.usage(&s.Usage)
	if version < 3 {
		return
	}
	c.strs(&s.AgentsPresent)
}

// usageFields lists the fields of one usage line.
func usageFields(c codec, u *Usage) {
	c.str(&u.Model)
	c.str(&u.Currency)
	c.i64(&u.CostMicros)
	c.u64(&u.InputTokens)
	c.u64(&u.OutputTokens)
}

type encoder struct{ b []byte }

func (e *encoder) str(v *string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(*v)))
	e.b = append(e.b, *v...)
}

func (e *encoder) strs(v *[]string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(*v)))
	for i := range *v {
		e.str(&(*v)[i])
	}
}

func (e *encoder) strMap(v *map[string]string) {
	// Sorted, so that equal states encode equally.
	keys := make([]string, 0, len(*v))
	for k := range *v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	e.b = binary.AppendUvarint(e.b, uint64(len(keys)))
	for _, k := range keys {
		val := (*v)[k]
		e.str(&k)
		e.str(&val)
	}
}

func (e *encoder) u32(v *uint32) { e.b = binary.AppendUvarint(e.b, uint64(*v)) }
func (e *encoder) u64(v *uint64) { e.b = binary.AppendUvarint(e.b, *v) }
func (e *encoder) i64(v *int64)  { e.b = binary.AppendVarint(e.b, *v) }

func (e *encoder) u64s(v *[]uint64) {
	// Fixed width: these are hashes, which a varint would make longer.
	e.b = binary.AppendUvarint(e.b, uint64(len(*v)))
	for _, x := range *v {
		e.b = binary.LittleEndian.AppendUint64(e.b, x)
	}
}

func (e *encoder) flag(v *bool) {
	if *v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

func (e *encoder) time(v *time.Time) {
	if v.IsZero() {
		e.b = append(e.b, 0)
		return
	}
	e.b = binary.AppendUvarint(e.b, uint64(v.Nanosecond())+1)
	e.b = binary.AppendVarint(e.b, v.Unix())
}

func (e *encoder) usage(v *[]Usage) {
	e.b = binary.AppendUvarint(e.b, uint64(len(*v)))
	for i := range *v {
		usageFields(e, &(*v)[i])
	}
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("convstate: truncated or invalid encoding (%s)", what)
	}
	d.b = nil
}

func (d *decoder) uvarint(what string) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// length reads a count of items that take at least min bytes each.
func (d *decoder) length(what string, min int) int {
	n := d.uvarint(what)
	if n > uint64(len(d.b)/min) {
		d.fail(what)
		return 0
	}
	return int(n)
}

func (d *decoder) str(v *string) {
	n := d.length("string", 1)
	*v = string(d.b[:n])
	d.b = d.b[n:]
}

func (d *decoder) strs(v *[]string) {
	n := d.length("list", 1)
	if n == 0 {
		*v = nil
		return
	}
	*v = make([]string, n)
	for i := range *v {
		d.str(&(*v)[i])
	}
}

func (d *decoder) strMap(v *map[string]string) {
	n := d.length("map", 2)
	if n == 0 {
		*v = nil
		return
	}
	*v = make(map[string]string, n)
	for range n {
		var k, val string
		d.str(&k)
		d.str(&val)
		(*v)[k] = val
	}
}

func (d *decoder) usage(v *[]Usage) {
	n := d.length("usage", 5)
	if n == 0 {
		*v = nil
		return
	}
	*v = make([]Usage, n)
	for i := range *v {
		usageFields(d, &(*v)[i])
	}
}

func (d *decoder) u32(v *uint32) {
	x := d.uvarint("uint32")
	if x > math.MaxUint32 {
		d.fail("uint32")
	}
	*v = uint32(x)
}

func (d *decoder) u64(v *uint64) { *v = d.uvarint("uint64") }

func (d *decoder) i64(v *int64) {
	x, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("int64")
		return
	}
	d.b = d.b[n:]
	*v = x
}

func (d *decoder) u64s(v *[]uint64) {
	n := d.length("hashes", 8)
	if n == 0 {
		*v = nil
		return
	}
	*v = make([]uint64, n)
	for i := range *v {
		(*v)[i] = binary.LittleEndian.Uint64(d.b[8*i:])
	}
	d.b = d.b[8*n:]
}

func (d *decoder) flag(v *bool) {
	if len(d.b) == 0 || d.b[0] > 1 {
		d.fail("bool")
		return
	}
	*v = d.b[0] == 1
	d.b = d.b[1:]
}

func (d *decoder) time(v *time.Time) {
	ns := d.uvarint("time")
	if ns == 0 {
		*v = time.Time{}
		return
	}
	if ns > uint64(time.Second) {
		d.fail("time")
		return
	}
	sec, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("time")
		return
	}
	d.b = d.b[n:]
	*v = time.Unix(sec, int64(ns-1)).UTC()
}
