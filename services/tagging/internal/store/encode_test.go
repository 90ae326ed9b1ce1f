package store

import (
	"testing"

	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestFactsEncoding: appendFacts' encoding decodes to the message encoded,
// with every field set, and the fast path is in use (a change of
// RuleConversation or RuleMessage that it does not know switches it off:
// update encode.go).
func TestFactsEncoding(t *testing.T) {
	if !fastFacts {
		t.Fatal("appendFacts falls back to proto.Marshal: RuleConversation or RuleMessage changed; update encode.go")
	}
	c := &taggingv1.RuleConversation{}
	fill(t, c.ProtoReflect(), 0)
	c.Messages = append(c.Messages, &taggingv1.RuleMessage{Role: "bot", Text: "ünïcode ✓", ResponseMs: -5},
		&taggingv1.RuleMessage{}, &taggingv1.RuleMessage{Unidentified: true})
	c.Variables["empty"] = ""
	c.Variables[""] = "empty key"
	for _, tc := range []*taggingv1.RuleConversation{c, {}, {Messages: []*taggingv1.RuleMessage{{}}}} {
		b, _, err := appendFacts([]byte("prefix"), tc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(b[:6]) != "prefix" {
			t.Fatal("prefix overwritten")
		}
		got := &taggingv1.RuleConversation{}
		if err := proto.Unmarshal(b[6:], got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, tc) {
			t.Fatalf("decoded differs:\n got  %v\n want %v", got, tc)
		}
		if want := proto.Size(tc); len(b)-6 != want {
			t.Fatalf("size %d, proto.Marshal's %d", len(b)-6, want)
		}
	}
	// Invalid UTF-8 is refused as proto.Marshal refuses it.
	ok := &taggingv1.RuleMessage{Text: "fine"}
	bad := &taggingv1.RuleConversation{Messages: []*taggingv1.RuleMessage{ok, {Text: "\xff"}}}
	if _, _, err := appendFacts(nil, bad, nil); err == nil {
		t.Fatal("invalid UTF-8 accepted")
	}
	if _, _, err := appendFacts(nil, bad, ok); err == nil {
		t.Fatal("invalid UTF-8 after the checked message accepted")
	}
}

// fill sets every field of m to a non-zero value (two elements per list and
// map, nested messages filled too).
func fill(t *testing.T, m protoreflect.Message, depth int) {
	fds := m.Descriptor().Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for j, k := range []string{"k1", "k2"} {
				mp.Set(protoreflect.ValueOfString(k).MapKey(), value(t, fd.MapValue(), m, j, depth))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := range 2 {
				if fd.Message() != nil {
					e := l.NewElement()
					fill(t, e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(value(t, fd, m, j, depth))
				}
			}
		case fd.Message() != nil:
			fill(t, m.Mutable(fd).Message(), depth+1)
		default:
			m.Set(fd, value(t, fd, m, 0, depth))
		}
	}
}

func value(t *testing.T, fd protoreflect.FieldDescriptor, _ protoreflect.Message, j, depth int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(string(fd.Name()) + "-" + string(rune('a'+j+depth)))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(int64(1000*(fd.Number())) + int64(j))
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(fd.Number()) + int32(j))
	default:
		t.Fatalf("fill: field %s of kind %s: extend the test", fd.FullName(), fd.Kind())
		return protoreflect.Value{}
	}
}
