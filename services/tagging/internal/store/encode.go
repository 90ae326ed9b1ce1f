package store

import (
	"unicode/utf8"

	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Live tagging encodes every touched conversation's facts after each batch,
// and generic protobuf encoding is slow on the two largest fields: the
// variables map (reflection and allocations per entry) and the recent
// messages. appendFacts encodes those two fields itself and the rest with
// proto.Marshal; the result is ordinary protobuf wire format (fields may
// come in another order, which every decoder accepts). TestFactsEncoding
// checks that it decodes to the same message.

// Field numbers appendFacts encodes itself.
const (
	factsVariablesField = 17
	factsMessagesField  = 24
)

// ruleMessageFields are RuleMessage's fields as appendMessage encodes them.
var ruleMessageFields = []struct {
	name string
	num  protowire.Number
	kind protoreflect.Kind
}{
	{"role", 1, protoreflect.StringKind}, {"text", 2, protoreflect.StringKind}, {"intent", 3, protoreflect.StringKind},
	{"unidentified", 4, protoreflect.BoolKind}, {"response_ms", 5, protoreflect.Int64Kind}, {"message_id", 6, protoreflect.StringKind},
	{"flow_id", 7, protoreflect.StringKind}, {"node_id", 8, protoreflect.StringKind},
}

// fastFacts says that the messages' descriptors are still the ones the
// encoder was written for; if they changed, every state goes through
// proto.Marshal.
var fastFacts = func() bool {
	c := (&taggingv1.RuleConversation{}).ProtoReflect().Descriptor().Fields()
	vars, msgs := c.ByNumber(factsVariablesField), c.ByNumber(factsMessagesField)
	if vars == nil || vars.Name() != "variables" || !vars.IsMap() ||
		vars.MapKey().Kind() != protoreflect.StringKind || vars.MapValue().Kind() != protoreflect.StringKind {
		return false
	}
	if msgs == nil || msgs.Name() != "messages" || !msgs.IsList() || msgs.Message() == nil ||
		msgs.Message().FullName() != (&taggingv1.RuleMessage{}).ProtoReflect().Descriptor().FullName() {
		return false
	}
	m := (&taggingv1.RuleMessage{}).ProtoReflect().Descriptor().Fields()
	if m.Len() != len(ruleMessageFields) {
		return false
	}
	for _, f := range ruleMessageFields {
		fd := m.ByNumber(f.num)
		if fd == nil || string(fd.Name()) != f.name || fd.Kind() != f.kind || fd.Cardinality() == protoreflect.Repeated || fd.HasPresence() {
			return false
		}
	}
	return true
}()

// appendFacts appends c's encoding to b. It sets c's variables and messages
// aside while proto.Marshal encodes the other fields, so c must not be in
// use elsewhere meanwhile. checked is a message of c known to be valid
// with every message before it (messages do not change once folded), or
// nil; appendFacts returns c's last message, now checked.
func appendFacts(b []byte, c *taggingv1.RuleConversation, checked *taggingv1.RuleMessage) ([]byte, *taggingv1.RuleMessage, error) {
	var last *taggingv1.RuleMessage
	if n := len(c.Messages); n > 0 {
		last = c.Messages[n-1]
	}
	if !fastFacts || !encodable(c, checked) {
		b, err := proto.MarshalOptions{}.MarshalAppend(b, c)
		if err != nil {
			return b, checked, err
		}
		return b, last, nil
	}
	vars, msgs := c.Variables, c.Messages
	c.Variables, c.Messages = nil, nil
	b, err := proto.MarshalOptions{}.MarshalAppend(b, c)
	c.Variables, c.Messages = vars, msgs
	if err != nil {
		return b, checked, err
	}
	for k, v := range vars {
		b = protowire.AppendTag(b, factsVariablesField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeString(1, k)+sizeString(2, v)))
		b = appendString(b, 1, k)
		b = appendString(b, 2, v)
	}
	for _, m := range msgs {
		b = protowire.AppendTag(b, factsMessagesField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeMessage(m)))
		b = appendMessage(b, m)
	}
	return b, last, nil
}

// encodable: the strings appendFacts writes itself are valid UTF-8 (as
// proto.Marshal requires; it reports the error otherwise) and no message
// carries unknown fields (which proto.Marshal keeps). Messages up to
// checked are not looked at again.
func encodable(c *taggingv1.RuleConversation, checked *taggingv1.RuleMessage) bool {
	for k, v := range c.Variables {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
	}
	msgs := c.Messages
	if checked != nil {
		for i := len(msgs) - 1; i >= 0; i-- {
			if msgs[i] == checked {
				msgs = msgs[i+1:]
				break
			}
		}
	}
	for _, m := range msgs {
		if m == nil || len(m.ProtoReflect().GetUnknown()) > 0 {
			return false
		}
		for _, s := range [...]string{m.Role, m.Text, m.Intent, m.MessageId, m.FlowId, m.NodeId} {
			if !utf8.ValidString(s) {
				return false
			}
		}
	}
	return true
}

func sizeString(n protowire.Number, s string) int {
	return protowire.SizeTag(n) + protowire.SizeBytes(len(s))
}

func appendString(b []byte, n protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// sizeMessage and appendMessage encode a RuleMessage as proto.Marshal does:
// fields in number order, zero values left out.
func sizeMessage(m *taggingv1.RuleMessage) int {
	n := 0
	for i, s := range [...]string{m.Role, m.Text, m.Intent} {
		if s != "" {
			n += sizeString(protowire.Number(i+1), s)
		}
	}
	if m.Unidentified {
		n += protowire.SizeTag(4) + 1
	}
	if m.ResponseMs != 0 {
		n += protowire.SizeTag(5) + protowire.SizeVarint(uint64(m.ResponseMs))
	}
	for i, s := range [...]string{m.MessageId, m.FlowId, m.NodeId} {
		if s != "" {
			n += sizeString(protowire.Number(i+6), s)
		}
	}
	return n
}

func appendMessage(b []byte, m *taggingv1.RuleMessage) []byte {
	for i, s := range [...]string{m.Role, m.Text, m.Intent} {
		if s != "" {
			b = appendString(b, protowire.Number(i+1), s)
		}
	}
	if m.Unidentified {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if m.ResponseMs != 0 {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.ResponseMs))
	}
	for i, s := range [...]string{m.MessageId, m.FlowId, m.NodeId} {
		if s != "" {
			b = appendString(b, protowire.Number(i+6), s)
		}
	}
	return b
}
