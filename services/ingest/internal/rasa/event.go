package rasa

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// event is one parsed broker message.
type event struct {
	index      int
	fields     map[string]json.RawMessage
	sender     string
	typ        string
	occurredAt *timestamppb.Timestamp
	clientID   string
}

// parseEvent checks the fields every event needs and derives the
// deterministic client event id. defaultSender is used when the event has no
// sender_id (events inside a tracker).
func parseEvent(i int, raw json.RawMessage, defaultSender string) (*event, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, &FieldError{Index: i, Reason: "must be a JSON object"}
	}
	e := &event{index: i, fields: fields}

	sender, err := requiredString(i, fields, "sender_id")
	if err != nil {
		if defaultSender == "" || !isNull(fields["sender_id"]) {
			return nil, err
		}
		sender = defaultSender
	}
	e.sender = sender

	if e.typ, err = requiredString(i, fields, "event"); err != nil {
		return nil, err
	}

	ts, tsText, ferr := timestamp(i, fields["timestamp"])
	if ferr != nil {
		return nil, ferr
	}
	e.occurredAt = ts
	e.clientID = clientEventID(e.sender, e.typ, tsText, fields)
	return e, nil
}

// requiredString returns a non-empty string field; numbers are accepted as
// their literal text.
func requiredString(i int, fields map[string]json.RawMessage, name string) (string, error) {
	raw := fields[name]
	if isNull(raw) {
		return "", &FieldError{Index: i, Field: name, Reason: "required"}
	}
	s, ok := scalar(raw)
	if !ok || (!isString(raw) && !isNumber(raw)) {
		return "", &FieldError{Index: i, Field: name, Reason: "must be a string"}
	}
	if s == "" {
		return "", &FieldError{Index: i, Field: name, Reason: "required"}
	}
	return s, nil
}

// timestamp parses Rasa's float seconds since the epoch (a JSON number or a
// numeric string) and returns it with its canonical text (shortest
// representation that round-trips, i.e. full precision).
func timestamp(i int, raw json.RawMessage) (*timestamppb.Timestamp, string, *FieldError) {
	if isNull(raw) {
		return nil, "", &FieldError{Index: i, Field: "timestamp", Reason: "required"}
	}
	text := string(raw)
	if isString(raw) {
		if err := json.Unmarshal(raw, &text); err != nil {
			return nil, "", &FieldError{Index: i, Field: "timestamp", Reason: "must be a number of seconds since the epoch"}
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
	if err != nil && !isRangeErr(err) {
		return nil, "", &FieldError{Index: i, Field: "timestamp", Reason: "must be a number of seconds since the epoch"}
	}
	// Bounds of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31.
	if err != nil || math.IsNaN(f) || f < -62135596800 || f >= 253402300800 {
		return nil, "", &FieldError{Index: i, Field: "timestamp", Reason: "out of range"}
	}
	canon := strconv.FormatFloat(f, 'f', -1, 64)
	ts := secondsToTimestamp(f, canon)
	if ts.CheckValid() != nil {
		return nil, "", &FieldError{Index: i, Field: "timestamp", Reason: "out of range"}
	}
	return ts, canon, nil
}

// secondsToTimestamp converts seconds since the epoch to a Timestamp. It
// takes the nanoseconds from canon, the shortest decimal text of f, so
// 1767612345.118734 becomes .118734000 rather than the binary float's
// .118733882.
func secondsToTimestamp(f float64, canon string) *timestamppb.Timestamp {
	intPart, frac, _ := strings.Cut(canon, ".")
	sec, err := strconv.ParseInt(intPart, 10, 64)
	if f < 0 || err != nil {
		whole := math.Floor(f)
		nanos := int64(math.Round((f - whole) * 1e9))
		sec = int64(whole)
		if nanos >= 1e9 {
			sec++
			nanos -= 1e9
		}
		return &timestamppb.Timestamp{Seconds: sec, Nanos: int32(nanos)}
	}
	roundUp := len(frac) > 9 && frac[9] >= '5'
	frac = (frac + "000000000")[:9]
	nanos, _ := strconv.ParseInt(frac, 10, 64)
	if roundUp {
		nanos++
	}
	if nanos >= 1e9 {
		sec++
		nanos -= 1e9
	}
	return &timestamppb.Timestamp{Seconds: sec, Nanos: int32(nanos)}
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// clientEventID derives the idempotency key of an event from its sender,
// type, timestamp and the fields that tell events of one type apart. The
// same broker message always yields the same key.
func clientEventID(sender, typ, ts string, fields map[string]json.RawMessage) string {
	h := sha256.New()
	write := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	write("rasa/v1")
	write(sender)
	write(typ)
	write(ts)
	for _, k := range [...]string{"text", "name", "value", "flow_id", "step_id", "message_id", "action_text", "data"} {
		write(k)
		write(canonical(fields[k]))
	}
	return "rasa-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// str returns a string field ("" when absent, null or not a scalar).
func (e *event) str(name string) string {
	s, _ := scalar(e.fields[name])
	return s
}

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// isString reports whether raw is a JSON string.
func isString(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '"'
}

// isNumber reports whether raw is a JSON number.
func isNumber(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && (t[0] == '-' || (t[0] >= '0' && t[0] <= '9'))
}

// scalar returns a JSON string's value, or the literal text of a number or
// boolean. ok is false for null, objects, arrays and absent values.
func scalar(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case 't', 'f':
		return string(raw), true
	case 'n', '{', '[':
		return "", false
	default:
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return "", false
		}
		return n.String(), true
	}
}

// number returns a JSON number (or numeric string) as a float.
func number(raw json.RawMessage) (float64, bool) {
	s, ok := scalar(raw)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// object returns a JSON object's fields, or nil.
func object(raw json.RawMessage) map[string]json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m
}

// array returns a JSON array's elements, or nil.
func array(raw json.RawMessage) []json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return nil
	}
	var a []json.RawMessage
	if json.Unmarshal(raw, &a) != nil {
		return nil
	}
	return a
}

// canonical re-encodes a JSON value deterministically (sorted object keys,
// numbers as written, valid UTF-8). It returns "" for an absent value.
func canonical(raw json.RawMessage) string {
	if len(bytes.TrimSpace(raw)) == 0 {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return ""
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return ""
	}
	return strings.TrimSuffix(out.String(), "\n")
}
