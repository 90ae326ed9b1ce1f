package validate

import (
	"fmt"
	"strconv"
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
	w := walker{maxText: maxText, root: path, path: make([]step, 0, 8)}
	return w.message(msg)
}

// walker keeps the field path as steps, spelled out only for a violation
// (validation runs for every event; most have none).
type walker struct {
	maxText int
	root    string
	path    []step
}

// step is a field, or (index >= 0) an item of the list before it.
type step struct {
	field protoreflect.FieldDescriptor
	index int
}

func (w *walker) violation(desc string) *Violation {
	var b strings.Builder
	b.WriteString(w.root)
	for _, s := range w.path {
		if s.index >= 0 {
			b.WriteString("[" + strconv.Itoa(s.index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(string(s.field.Name()))
	}
	return &Violation{Field: b.String(), Description: desc}
}

func (w *walker) message(msg protoreflect.Message) *Violation {
	var v *Violation
	msg.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		w.path = append(w.path, step{field: fd, index: -1})
		v = w.field(fd, val)
		w.path = w.path[:len(w.path)-1]
		return v == nil
	})
	return v
}

func limitOf(fd protoreflect.FieldDescriptor, maxText int) FieldLimit {
	// "parley.event.v1.Visitor.ip" → "Visitor.ip", without allocating.
	key := string(fd.FullName())
	if i := strings.LastIndexByte(key, '.'); i > 0 {
		if j := strings.LastIndexByte(key[:i], '.'); j >= 0 {
			key = key[j+1:]
		}
	}
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

func (w *walker) field(fd protoreflect.FieldDescriptor, val protoreflect.Value) *Violation {
	if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
		return w.message(val.Message())
	}
	l := limitOf(fd, w.maxText)
	switch {
	case fd.IsMap():
		m := val.Map()
		if m.Len() > l.Items {
			return w.violation(fmt.Sprintf("%d entries; at most %d", m.Len(), l.Items))
		}
		var v *Violation
		m.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			if ks, ok := k.Interface().(string); ok {
				if d := checkString(ks, DefaultMapKeyBytes); d != "" {
					v = w.violation("key " + d)
					return false
				}
			}
			v = w.scalar(fd.MapValue(), mv, l.Bytes, k)
			return v == nil
		})
		return v
	case fd.IsList():
		list := val.List()
		if list.Len() > l.Items {
			return w.violation(fmt.Sprintf("%d items; at most %d", list.Len(), l.Items))
		}
		for i := range list.Len() {
			w.path = append(w.path, step{index: i})
			v := w.scalar(fd, list.Get(i), l.Bytes, protoreflect.MapKey{})
			w.path = w.path[:len(w.path)-1]
			if v != nil {
				return v
			}
		}
		return nil
	default:
		return w.scalar(fd, val, l.Bytes, protoreflect.MapKey{})
	}
}

// scalar checks one value (a singular field, a list item or, with key set,
// a map value).
func (w *walker) scalar(fd protoreflect.FieldDescriptor, val protoreflect.Value, maxBytes int, key protoreflect.MapKey) *Violation {
	what := func(d string) *Violation {
		if key.IsValid() {
			d = "value of " + keyName(key) + " " + d
		}
		return w.violation(d)
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		if d := checkString(val.String(), maxBytes); d != "" {
			return what(d)
		}
	case protoreflect.BytesKind:
		if n := len(val.Bytes()); n > maxBytes {
			return what(fmt.Sprintf("%d bytes; at most %d", n, maxBytes))
		}
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(val.Enum()) == nil {
			return what(fmt.Sprintf("unknown value %d", val.Enum()))
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return w.message(val.Message())
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
