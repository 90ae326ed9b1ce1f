package validate

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Default bounds of every client-supplied field not in FieldLimits. They are
// documented, with every exception, in docs/events.md ("Field limits").
const (
	// DefaultStringBytes bounds any string (ids, names, codes).
	DefaultStringBytes = 256
	// DefaultListItems bounds any repeated field.
	DefaultListItems = 100
	// DefaultMapEntries bounds any map (variables, lead fields).
	DefaultMapEntries = 100
	// DefaultMapKeyBytes bounds a map key.
	DefaultMapKeyBytes = 128
	// DefaultMapValueBytes bounds a map value.
	DefaultMapValueBytes = 1024
)

// FieldLimit overrides the default bound of one field.
type FieldLimit struct {
	// Bytes bounds a string (or each value of a map).
	Bytes int
	// Items bounds a list (or the entries of a map).
	Items int
}

// FieldLimits are the exceptions to the defaults, by "Message.field" (the
// proto message name, so a shared message such as Visitor has the same
// bounds wherever it appears). MessagePosted.text is bounded by
// Limits.MaxTextBytes instead.
var FieldLimits = map[string]FieldLimit{
	"Envelope.conversation_id":          {Bytes: 128},
	"Envelope.client_event_id":          {Bytes: 128},
	"Envelope.event_id":                 {Bytes: 36},
	"Envelope.causation_id":             {Bytes: 128},
	"Envelope.correlation_id":           {Bytes: 128},
	"Visitor.ip":                        {Bytes: 64},
	"Visitor.user_agent":                {Bytes: 1024},
	"Visitor.locale":                    {Bytes: 35},
	"ConversationStarted.page_url":      {Bytes: 2048},
	"ConversationStarted.referrer":      {Bytes: 2048},
	"ConversationStarted.variables":     {Items: 100, Bytes: 1024},
	"PageViewed.url":                    {Bytes: 2048},
	"PageViewed.referrer":               {Bytes: 2048},
	"PageViewed.title":                  {Bytes: 512},
	"VariablesCaptured.variables":       {Items: 100, Bytes: 1024},
	"LeadCaptured.fields":               {Items: 50, Bytes: 1024},
	"HandoffRequested.reason":           {Bytes: 1024},
	"ConversationClosed.note":           {Bytes: 1024},
	"DebugTrace.steps":                  {Items: 200},
	"DebugStep.detail":                  {Bytes: 4096},
	"IssueDetected.details":             {Bytes: 4096},
	"Flagged.note":                      {Bytes: 1024},
	"Unflagged.note":                    {Bytes: 1024},
	"LateEventRecorded.late_event_kind": {Bytes: 64},
}

// Fields checks every string, list and map of msg, recursively: size
// bounds (FieldLimits, else the defaults; maxText for MessagePosted.text),
// valid UTF-8 without U+0000 (PostgreSQL and ClickHouse cannot hold it
// everywhere), and known enum values. path is the message's field path,
// e.g. "events[2]".
func Fields(msg protoreflect.Message, path string, maxText int) *Violation {
	var v *Violation
	msg.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		v = field(fd, val, join(path, string(fd.Name())), maxText)
		return v == nil
	})
	return v
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func limitOf(fd protoreflect.FieldDescriptor, maxText int) FieldLimit {
	key := string(fd.ContainingMessage().Name()) + "." + string(fd.Name())
	if key == "MessagePosted.text" {
		return FieldLimit{Bytes: maxText}
	}
	l := FieldLimits[key]
	switch {
	case fd.IsMap():
		if l.Items == 0 {
			l.Items = DefaultMapEntries
		}
		if l.Bytes == 0 {
			l.Bytes = DefaultMapValueBytes
		}
	case fd.IsList():
		if l.Items == 0 {
			l.Items = DefaultListItems
		}
		if l.Bytes == 0 {
			l.Bytes = DefaultStringBytes
		}
	default:
		if l.Bytes == 0 {
			l.Bytes = DefaultStringBytes
		}
	}
	return l
}

func field(fd protoreflect.FieldDescriptor, val protoreflect.Value, path string, maxText int) *Violation {
	l := limitOf(fd, maxText)
	switch {
	case fd.IsMap():
		m := val.Map()
		if m.Len() > l.Items {
			return &Violation{Field: path, Description: fmt.Sprintf("%d entries; at most %d", m.Len(), l.Items)}
		}
		var v *Violation
		m.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			if ks, ok := k.Interface().(string); ok {
				if d := checkString(ks, DefaultMapKeyBytes); d != "" {
					v = &Violation{Field: path, Description: "key " + d}
					return false
				}
			}
			v = scalar(fd.MapValue(), mv, path, l.Bytes, maxText, "value of "+keyName(k)+" ")
			return v == nil
		})
		return v
	case fd.IsList():
		list := val.List()
		if list.Len() > l.Items {
			return &Violation{Field: path, Description: fmt.Sprintf("%d items; at most %d", list.Len(), l.Items)}
		}
		for i := range list.Len() {
			if v := scalar(fd, list.Get(i), fmt.Sprintf("%s[%d]", path, i), l.Bytes, maxText, ""); v != nil {
				return v
			}
		}
		return nil
	default:
		return scalar(fd, val, path, l.Bytes, maxText, "")
	}
}

// scalar checks one value (a singular field, a list item or a map value).
func scalar(fd protoreflect.FieldDescriptor, val protoreflect.Value, path string, maxBytes, maxText int, what string) *Violation {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if d := checkString(val.String(), maxBytes); d != "" {
			return &Violation{Field: path, Description: what + d}
		}
	case protoreflect.BytesKind:
		if n := len(val.Bytes()); n > maxBytes {
			return &Violation{Field: path, Description: fmt.Sprintf("%s%d bytes; at most %d", what, n, maxBytes)}
		}
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(val.Enum()) == nil {
			return &Violation{Field: path, Description: fmt.Sprintf("%sunknown value %d", what, val.Enum())}
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return Fields(val.Message(), path, maxText)
	}
	return nil
}

// checkString describes what is wrong with s ("" when nothing).
func checkString(s string, maxBytes int) string {
	if len(s) > maxBytes {
		return fmt.Sprintf("%d bytes; at most %d", len(s), maxBytes)
	}
	if !utf8.ValidString(s) {
		return "not valid UTF-8"
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "contains U+0000 (NUL), which cannot be stored"
	}
	return ""
}

// keyName quotes a map key for a message, shortened.
func keyName(k protoreflect.MapKey) string {
	s := k.String()
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return fmt.Sprintf("%q", strings.ToValidUTF8(s, "?"))
}
