package projector

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var tricky = []string{
	"", "a", "hello world", "Grüße, 世界 🎉", `quote " and \ backslash`, "tab\tnew\nline\r", "\x00\x01\x1f\x7f",
	"\u2028\u2029", "\ufffd", "<b>&amp;</b>", "ünïcödé\u00e9", strings.Repeat("long text ", 30), "/path/with/slashes", "emoji 👩‍👩‍👧",
}

// fill sets fields of m to random values, recursively.
func fill(r *rand.Rand, m protoreflect.Message, depth int) {
	fds := m.Descriptor().Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		if r.IntN(4) == 0 {
			continue // leave unset
		}
		if od := fd.ContainingOneof(); od != nil && m.WhichOneof(od) != nil {
			continue
		}
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range r.IntN(4) {
				if fd.Kind() == protoreflect.MessageKind {
					if depth > 0 {
						v := l.NewElement()
						fill(r, v.Message(), depth-1)
						l.Append(v)
					}
					continue
				}
				l.Append(scalar(r, fd))
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range r.IntN(5) {
				k := scalar(r, fd.MapKey()).MapKey()
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					if depth > 0 {
						v := mp.NewValue()
						fill(r, v.Message(), depth-1)
						mp.Set(k, v)
					}
					continue
				}
				mp.Set(k, scalar(r, fd.MapValue()))
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth > 0 {
				v := m.NewField(fd)
				fill(r, v.Message(), depth-1)
				m.Set(fd, v)
			}
		default:
			m.Set(fd, scalar(r, fd))
		}
	}
	if m.Descriptor().FullName() == "google.protobuf.Timestamp" {
		fds := m.Descriptor().Fields()
		secs := []int64{0, 1, 1_700_000_000, -1, -62135596800, 253402300799, r.Int64N(4_000_000_000)}[r.IntN(7)]
		nanos := []int64{0, 1, 999_999_999, 123_000_000, 123_456_000, 123_456_789, 5_000}[r.IntN(7)]
		m.Set(fds.ByNumber(1), protoreflect.ValueOfInt64(secs))
		m.Set(fds.ByNumber(2), protoreflect.ValueOfInt32(int32(nanos)))
	}
}

func scalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 0)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(tricky[r.IntN(len(tricky))])
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32([]int32{0, 1, -1, math.MaxInt32, math.MinInt32, r.Int32()}[r.IntN(6)])
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32([]uint32{0, 1, math.MaxUint32, r.Uint32()}[r.IntN(4)])
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64([]int64{0, 1, -1, math.MaxInt64, math.MinInt64, r.Int64()}[r.IntN(6)])
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64([]uint64{0, 1, math.MaxUint64, r.Uint64()}[r.IntN(4)])
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32([]float64{0, 1, -1.5, 0.91, 1e-7, 3e38, 1e21, math.NaN(), math.Inf(1), math.Inf(-1), r.Float64()}[r.IntN(11)]))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64([]float64{0, 1, -1.5, 0.91, 1e-7, 1e-300, 1e21, 1.5e300, math.NaN(), math.Inf(1), math.Inf(-1), r.Float64(), math.SmallestNonzeroFloat64}[r.IntN(13)])
	case protoreflect.BytesKind:
		b := make([]byte, r.IntN(10))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return protoreflect.ValueOfBytes(b)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if r.IntN(8) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(1000 + r.IntN(5))) // unknown to the schema
		}
		return protoreflect.ValueOfEnum(vals.Get(r.IntN(vals.Len())).Number())
	}
	panic("no random value for " + fd.Kind().String())
}

// TestPayloadJSONMatchesProtojson holds appendPayloadJSON to protojson's
// output (compacted: protojson adds random spaces on purpose) for random
// values of every payload type, and checks the visitor's IP stays out.
func TestPayloadJSONMatchesProtojson(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	env := &eventv1.Envelope{}
	oneof := env.ProtoReflect().Descriptor().Oneofs().ByName("payload")
	opts := protojson.MarshalOptions{UseProtoNames: true}
	for i := range oneof.Fields().Len() {
		fd := oneof.Fields().Get(i)
		for n := range 300 {
			m := env.ProtoReflect().NewField(fd).Message()
			if n > 0 {
				fill(r, m, 3)
			}
			want, wantErr := opts.Marshal(m.Interface())
			var hidden bool
			if cs, ok := m.Interface().(*eventv1.ConversationStarted); ok && cs.GetVisitor().GetIp() != "" {
				// protojson without the IP, as the projector always wrote it.
				c := proto.Clone(cs).(*eventv1.ConversationStarted)
				c.Visitor.Ip = ""
				want, wantErr = opts.Marshal(c)
				hidden = true
			}
			got, err := appendPayloadJSON(nil, m)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("%s: error %v, protojson %v", fd.Name(), err, wantErr)
			}
			if err != nil {
				continue
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, want); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, compact.Bytes()) {
				t.Fatalf("%s:\n got %s\nwant %s", fd.Name(), got, compact.Bytes())
			}
			if hidden && bytes.Contains(got, []byte(`"ip"`)) {
				t.Fatalf("IP in payload_json: %s", got)
			}
		}
	}
	// Invalid UTF-8 has no JSON form: no payload, as with protojson.
	bad := &eventv1.MessagePosted{Text: "bad \xff byte"}
	if _, err := appendPayloadJSON(nil, bad.ProtoReflect()); err == nil {
		t.Fatal("invalid UTF-8 encoded")
	}
}

func BenchmarkPayloadJSON(b *testing.B) {
	m := &eventv1.MessagePosted{MessageId: "m1", Role: eventv1.Role_ROLE_VISITOR, Text: "Hello, where is my order 12345?",
		Intent: &eventv1.Intent{Name: "order_status", Confidence: 0.93}, ResponseTimeMs: 850}
	b.Run("protojson", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_, _ = protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		}
	})
	b.Run("appendPayloadJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for range b.N {
			buf, _ = appendPayloadJSON(buf[:0], m.ProtoReflect())
		}
	})
}
