package projector

import (
	"encoding/base64"
	"errors"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// appendPayloadJSON appends the JSON of an event payload to b: what
// protojson.MarshalOptions{UseProtoNames: true} writes (field names as in
// the .proto, 64-bit integers as strings, enums by name, timestamps in RFC
// 3339), without protojson's deliberately unstable whitespace and several
// times faster. The visitor's IP is left out: it is used for location
// lookup only, and analysts never see it. TestPayloadJSONMatchesProtojson
// holds it to protojson's output for every payload.
//
// Well-known types other than Timestamp are not handled (no payload has
// them): errUnsupported tells the caller to use protojson.
func appendPayloadJSON(b []byte, m protoreflect.Message) ([]byte, error) {
	return appendMessage(b, m)
}

var (
	errUnsupported = errors.New("projector: payload JSON: unsupported message type")
	errInvalidJSON = errors.New("projector: payload JSON: value has no JSON form")
)

// hiddenField is left out of payload_json.
const hiddenField protoreflect.FullName = "parley.event.v1.Visitor.ip"

// msgPlan is what encoding one message type needs, computed once.
type msgPlan struct {
	timestamp   bool // google.protobuf.Timestamp
	unsupported bool // another well-known type
	fields      []fieldPlan
}

type fieldPlan struct {
	fd   protoreflect.FieldDescriptor
	name []byte // `"name":`
}

var plans sync.Map // protoreflect.FullName -> *msgPlan

func planOf(md protoreflect.MessageDescriptor) *msgPlan {
	if p, ok := plans.Load(md.FullName()); ok {
		return p.(*msgPlan)
	}
	p := &msgPlan{}
	switch {
	case md.FullName() == "google.protobuf.Timestamp":
		p.timestamp = true
	case md.ParentFile() != nil && md.ParentFile().Package() == "google.protobuf" && md.FullName() != "google.protobuf.Empty":
		p.unsupported = true
	default:
		fds := md.Fields()
		for i := range fds.Len() {
			fd := fds.Get(i)
			if fd.FullName() == hiddenField {
				continue
			}
			name, _ := appendString(nil, fd.TextName())
			p.fields = append(p.fields, fieldPlan{fd: fd, name: append(name, ':')})
		}
	}
	plans.Store(md.FullName(), p)
	return p
}

func appendMessage(b []byte, m protoreflect.Message) ([]byte, error) {
	p := planOf(m.Descriptor())
	switch {
	case p.unsupported:
		return b, errUnsupported
	case p.timestamp:
		return appendTimestamp(b, m)
	}
	b = append(b, '{')
	first := true
	var err error
	// Declaration order, as protojson writes fields.
	for i := range p.fields {
		f := &p.fields[i]
		if !m.Has(f.fd) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, f.name...)
		v := m.Get(f.fd)
		switch {
		case f.fd.IsList():
			b, err = appendList(b, v.List(), f.fd)
		case f.fd.IsMap():
			b, err = appendMap(b, v.Map(), f.fd)
		default:
			b, err = appendSingular(b, v, f.fd)
		}
		if err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func appendList(b []byte, l protoreflect.List, fd protoreflect.FieldDescriptor) ([]byte, error) {
	b = append(b, '[')
	var err error
	for i := range l.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendSingular(b, l.Get(i), fd); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

func appendMap(b []byte, m protoreflect.Map, fd protoreflect.FieldDescriptor) ([]byte, error) {
	keys := make([]protoreflect.MapKey, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	// protojson's order: false before true, numbers ascending, strings by
	// bytes.
	slices.SortFunc(keys, func(x, y protoreflect.MapKey) int {
		switch x.Interface().(type) {
		case bool:
			return boolCmp(x.Bool(), y.Bool())
		case int32, int64:
			return cmpOrdered(x.Int(), y.Int())
		case uint32, uint64:
			return cmpOrdered(x.Uint(), y.Uint())
		default:
			return cmpOrdered(x.String(), y.String())
		}
	})
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendString(b, k.String()); err != nil {
			return b, err
		}
		b = append(b, ':')
		if b, err = appendSingular(b, m.Get(k), fd.MapValue()); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func boolCmp(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	}
	return 1
}

func cmpOrdered[T int64 | uint64 | string](x, y T) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func appendSingular(b []byte, v protoreflect.Value, fd protoreflect.FieldDescriptor) ([]byte, error) {
	if !v.IsValid() {
		return append(b, "null"...), nil
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.StringKind:
		return appendString(b, v.String())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendInt(b, v.Int(), 10), '"'), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendUint(b, v.Uint(), 10), '"'), nil
	case protoreflect.FloatKind:
		return appendFloat(b, v.Float(), 32), nil
	case protoreflect.DoubleKind:
		return appendFloat(b, v.Float(), 64), nil
	case protoreflect.BytesKind:
		b = append(b, '"')
		return append(base64.StdEncoding.AppendEncode(b, v.Bytes()), '"'), nil
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return append(b, "null"...), nil
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendString(b, string(ev.Name()))
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendMessage(b, v.Message())
	}
	return b, errUnsupported
}

// appendString is protojson's string encoding: ", \ and control characters
// escaped (\b \f \n \r \t or \u00XX), everything else as is; invalid UTF-8
// is an error.
func appendString(b []byte, s string) ([]byte, error) {
	b = append(b, '"')
	i := indexNeedEscape(s)
	s, b = s[i:], append(b, s[:i]...)
	for len(s) > 0 {
		switch r, n := utf8.DecodeRuneInString(s); {
		case r == utf8.RuneError && n == 1:
			return b, errInvalidJSON
		case r < ' ' || r == '"' || r == '\\':
			b = append(b, '\\')
			switch r {
			case '"', '\\':
				b = append(b, byte(r))
			case '\b':
				b = append(b, 'b')
			case '\f':
				b = append(b, 'f')
			case '\n':
				b = append(b, 'n')
			case '\r':
				b = append(b, 'r')
			case '\t':
				b = append(b, 't')
			default:
				b = append(b, 'u')
				b = append(b, "0000"[1+(bits.Len32(uint32(r))-1)/4:]...)
				b = strconv.AppendUint(b, uint64(r), 16)
			}
			s = s[n:]
		default:
			i := indexNeedEscape(s[n:])
			s, b = s[n+i:], append(b, s[:n+i]...)
		}
	}
	return append(b, '"'), nil
}

func indexNeedEscape(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == '\\' || c == '"' || c >= utf8.RuneSelf {
			if c < utf8.RuneSelf {
				return i
			}
			// Multi-byte: only an invalid sequence needs the slow path.
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return i
			}
			i += n - 1
		}
	}
	return len(s)
}

// appendFloat is protojson's number format: NaN and infinities as strings,
// otherwise the shortest representation, with an exponent only below 1e-6
// or from 1e21 on.
func appendFloat(b []byte, n float64, bitSize int) []byte {
	switch {
	case math.IsNaN(n):
		return append(b, `"NaN"`...)
	case math.IsInf(n, +1):
		return append(b, `"Infinity"`...)
	case math.IsInf(n, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(n); abs != 0 {
		if bitSize == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bitSize == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, n, format, -1, bitSize)
	if format == 'e' {
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// Timestamps protojson can write: 0001-01-01 to 9999-12-31.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

// appendTimestamp writes RFC 3339 in UTC with 0, 3, 6 or 9 fractional
// digits, as protojson does.
func appendTimestamp(b []byte, m protoreflect.Message) ([]byte, error) {
	fds := m.Descriptor().Fields()
	secs := m.Get(fds.ByNumber(1)).Int()
	nanos := m.Get(fds.ByNumber(2)).Int()
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > 999_999_999 {
		return b, errInvalidJSON
	}
	t := time.Unix(secs, nanos).UTC()
	b = append(b, '"')
	b = t.AppendFormat(b, "2006-01-02T15:04:05")
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		f := strconv.AppendInt(frac[:0], int64(ns)+1e9, 10)[1:] // 9 digits
		switch {
		case ns%1e6 == 0:
			f = f[:3]
		case ns%1e3 == 0:
			f = f[:6]
		}
		b = append(b, '.')
		b = append(b, f...)
	}
	return append(b, 'Z', '"'), nil
}
