// Package sgd replays the Schema-Guided Dialogue corpus (Google Research,
// DSTC8; CC BY-SA 4.0) through Parley: it reads the corpus's dialogue files
// and turns each dialogue into a conversation of Parley events.
//
// The format (Google Research's Schema-Guided Dialogue dataset, DSTC8): each
// train_dialogues_NNN.json(.gz) is a JSON array of dialogues with
// dialogue_id, services and turns; a turn has a speaker (USER or SYSTEM), an
// utterance and one frame per service it touches, with dialogue acts, the
// user's dialogue state (active intent, slot values) and the system's service
// calls.
//
// The mapping: dialogue → conversation "sgd-<run>-<dialogue_id>"; its first
// service → bot; USER turn → visitor message (intent: the frame's active
// intent); SYSTEM turn → bot message (intent: the service's active intent,
// else the first act) followed by a flow_step while a flow runs; an active
// intent → flow_started when it first appears, flow_completed and
// goal_reached on NOTIFY_SUCCESS, flow_dropped (failed) on NOTIFY_FAILURE,
// flow_dropped when the dialogue ends without either; new slot values →
// variables_captured (extracted); a service call → debug_trace of the
// visitor message it answers; the user's GOODBYE → conversation_closed by
// the visitor after the last turn. The corpus has no timestamps: a visitor
// turn comes 5-60 s after the previous one, a bot answer 0.5-4 s after the
// visitor, and conversations are spread like generated ones
// (scenario.Place).
package sgd

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/tools/loadgen/scenario"
)

// Dialogue is one SGD dialogue (fields Parley does not use are skipped).
type Dialogue struct {
	DialogueID string   `json:"dialogue_id"`
	Services   []string `json:"services"`
	Turns      []Turn   `json:"turns"`
}

// Turn is one utterance of the user or the system.
type Turn struct {
	Speaker   string  `json:"speaker"`
	Utterance string  `json:"utterance"`
	Frames    []Frame `json:"frames"`
}

// Frame is what a turn does in one service.
type Frame struct {
	Service     string       `json:"service"`
	Actions     []Action     `json:"actions"`
	State       *State       `json:"state,omitempty"`
	ServiceCall *ServiceCall `json:"service_call,omitempty"`
	// ServiceResults are only counted.
	ServiceResults []json.RawMessage `json:"service_results,omitempty"`
}

// Action is a dialogue act.
type Action struct {
	Act    string   `json:"act"`
	Slot   string   `json:"slot"`
	Values []string `json:"values"`
}

// State is the user's dialogue state in a service after a user turn.
type State struct {
	ActiveIntent   string              `json:"active_intent"`
	RequestedSlots []string            `json:"requested_slots"`
	SlotValues     map[string][]string `json:"slot_values"`
}

// ServiceCall is a call the system made to the service's API.
type ServiceCall struct {
	Method     string            `json:"method"`
	Parameters map[string]string `json:"parameters"`
}

// ParseDialogues decodes one corpus file's JSON array of dialogues.
func ParseDialogues(data []byte) ([]Dialogue, error) {
	var ds []Dialogue
	if err := json.Unmarshal(data, &ds); err != nil {
		return nil, fmt.Errorf("sgd: %w", err)
	}
	return ds, nil
}

// Files lists the dialogue files of a corpus directory in order: names
// containing "dialogues" ending in .json or .json.gz (the schema file is
// skipped).
func Files(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("sgd: corpus %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.Contains(n, "dialogues") || !(strings.HasSuffix(n, ".json") || strings.HasSuffix(n, ".json.gz")) {
			continue
		}
		out = append(out, filepath.Join(dir, n))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("sgd: no *dialogues*.json(.gz) files in %s", dir)
	}
	sort.Strings(out)
	return out, nil
}

// ReadFile reads one dialogue file, gzipped or plain.
func ReadFile(path string) ([]Dialogue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sgd: %w", err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("sgd: %s: %w", path, err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("sgd: %s: %w", path, err)
		}
	}
	ds, err := ParseDialogues(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return ds, nil
}

// Corpus reads a corpus directory file by file, so that only one file's
// dialogues are in memory at a time.
type Corpus struct {
	files []string
	cur   []Dialogue
}

// Open lists a corpus directory's dialogue files.
func Open(dir string) (*Corpus, error) {
	files, err := Files(dir)
	if err != nil {
		return nil, err
	}
	return &Corpus{files: files}, nil
}

// Next returns the next dialogue, or io.EOF after the last.
func (c *Corpus) Next() (Dialogue, error) {
	for len(c.cur) == 0 {
		if len(c.files) == 0 {
			return Dialogue{}, io.EOF
		}
		ds, err := ReadFile(c.files[0])
		if err != nil {
			return Dialogue{}, err
		}
		c.files, c.cur = c.files[1:], ds
	}
	d := c.cur[0]
	c.cur = c.cur[1:]
	return d, nil
}

// Options control the conversion of dialogues.
type Options struct {
	// Tenants receive dialogues (weights as scenario.PickTenant). Required.
	Tenants []string
	// Seed makes channels, confidences and times reproducible.
	Seed int64
	// RunID goes into conversation ids: "sgd-<RunID>-<dialogue_id>"
	// ("sgd-<dialogue_id>" when empty).
	RunID string
	// Start and Spread place conversations as scenario.Place does.
	Start  time.Time
	Spread time.Duration
}

// ConversationID is the conversation id of a dialogue: subject-safe (other
// characters become "_") and at most 128 characters.
func ConversationID(runID, dialogueID string) string {
	var b strings.Builder
	b.WriteString("sgd-")
	if runID != "" {
		b.WriteString(runID)
		b.WriteString("-")
	}
	for _, r := range dialogueID {
		if r < 128 && (r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 128 {
		s = s[:128]
	}
	return s
}

// flowState is where one intent's flow stands.
type flowState int

const (
	flowNone flowState = iota
	flowActive
	flowDone
)

// converter carries one dialogue's conversion state.
type converter struct {
	conv      scenario.Conversation
	events    []*eventv1.Envelope
	offsets   []time.Duration
	t         time.Duration
	msgs      int
	flows     map[string]flowState // by intent
	lastStep  map[string]string    // by intent
	intentOf  map[string]string    // service → its latest active intent
	variables map[string]string
}

func (c *converter) add(gap time.Duration, env *eventv1.Envelope) {
	if len(c.events) > 0 {
		c.t += max(gap, time.Millisecond)
	}
	env.ConversationId = c.conv.ID
	env.ClientEventId = "e" + strconv.Itoa(len(c.events)+1)
	c.events = append(c.events, env)
	c.offsets = append(c.offsets, c.t)
}

func (c *converter) message(gap time.Duration, m *eventv1.MessagePosted) string {
	c.msgs++
	m.MessageId = "m" + strconv.Itoa(c.msgs)
	c.add(gap, &eventv1.Envelope{Payload: &eventv1.Envelope_MessagePosted{MessagePosted: m}})
	return m.MessageId
}

func (c *converter) startFlow(service, intent string) {
	if c.flows[intent] == flowActive {
		return
	}
	c.flows[intent] = flowActive
	c.add(time.Millisecond, &eventv1.Envelope{Payload: &eventv1.Envelope_FlowStarted{FlowStarted: &eventv1.FlowStarted{FlowId: intent, FlowName: service + ": " + intent}}})
}

// Convert turns dialogue i of a replay into a conversation. Dialogues
// without turns are refused.
func Convert(d Dialogue, i int, opts Options) (scenario.Conversation, error) {
	if len(opts.Tenants) == 0 {
		return scenario.Conversation{}, errors.New("sgd: at least one tenant is required")
	}
	if d.DialogueID == "" || len(d.Turns) == 0 {
		return scenario.Conversation{}, fmt.Errorf("sgd: dialogue %d: no id or no turns", i)
	}
	if opts.Spread <= 0 {
		opts.Spread = time.Hour
	}
	r := scenario.Rand(opts.Seed, i)
	bot := "sgd"
	if len(d.Services) > 0 && d.Services[0] != "" {
		bot = d.Services[0]
	}
	c := &converter{
		conv:  scenario.Conversation{Index: i, Tenant: scenario.PickTenant(r, opts.Tenants), ID: ConversationID(opts.RunID, d.DialogueID), BotID: bot},
		flows: map[string]flowState{}, lastStep: map[string]string{}, intentOf: map[string]string{}, variables: map[string]string{},
	}
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo))) }

	started := &eventv1.ConversationStarted{BotId: bot, Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE,
		Visitor: &eventv1.Visitor{Token: "v-" + c.conv.ID, Locale: "en-US"}}
	switch x := r.IntN(10); {
	case x < 5:
		started.Channel, started.Platform, started.PageUrl = eventv1.Channel_CHANNEL_WEB_WIDGET, eventv1.Platform_PLATFORM_DESKTOP, "https://assistant.example.com/"
	case x < 7:
		started.Channel, started.Platform = eventv1.Channel_CHANNEL_WHATSAPP, eventv1.Platform_PLATFORM_APP
	case x < 8:
		started.Channel, started.Platform = eventv1.Channel_CHANNEL_TELEGRAM, eventv1.Platform_PLATFORM_APP
	case x < 9:
		started.Channel = eventv1.Channel_CHANNEL_VOICE
	default:
		started.Channel = eventv1.Channel_CHANNEL_API
	}
	if len(d.Services) > 1 {
		started.Variables = map[string]string{"services": strings.Join(d.Services, ",")}
	}
	c.add(0, &eventv1.Envelope{Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: started}})

	goodbye := false
	var lastVisitor string
	for _, turn := range d.Turns {
		switch turn.Speaker {
		case "USER":
			m := &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: clip(turn.Utterance)}
			var newFlows [][2]string
			vars := map[string]string{}
			for _, f := range turn.Frames {
				for _, a := range f.Actions {
					if a.Act == "GOODBYE" {
						goodbye = true
					}
				}
				if f.State == nil {
					continue
				}
				if in := f.State.ActiveIntent; in != "" && in != "NONE" {
					if m.Intent == nil {
						m.Intent = &eventv1.Intent{Name: in, Confidence: 0.8 + 0.2*r.Float64()}
						m.FlowId = in
					}
					if c.flows[in] == flowNone && !slices.Contains(newFlows, [2]string{f.Service, in}) {
						newFlows = append(newFlows, [2]string{f.Service, in})
					}
					c.intentOf[f.Service] = in
				}
				for _, k := range slices.Sorted(maps.Keys(f.State.SlotValues)) {
					if vs := f.State.SlotValues[k]; len(vs) > 0 && c.variables[k] != vs[0] {
						vars[k] = vs[0]
					}
				}
			}
			if m.Intent == nil {
				if act := firstAct(turn.Frames); act != "" {
					m.Intent = &eventv1.Intent{Name: strings.ToLower(act), Confidence: 0.8 + 0.2*r.Float64()}
				}
			}
			lastVisitor = c.message(between(5*time.Second, 60*time.Second), m)
			for _, nf := range newFlows {
				c.startFlow(nf[0], nf[1])
			}
			if len(vars) > 0 {
				for k, v := range vars {
					c.variables[k] = v
				}
				c.add(time.Millisecond, &eventv1.Envelope{Payload: &eventv1.Envelope_VariablesCaptured{VariablesCaptured: &eventv1.VariablesCaptured{
					Variables: vars, Source: eventv1.VariableSource_VARIABLE_SOURCE_EXTRACTED}}})
			}
		case "SYSTEM":
			rt := between(500*time.Millisecond, 4*time.Second)
			m := &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: clip(turn.Utterance), ResponseTimeMs: uint32(rt / time.Millisecond), ReplyToMessageId: lastVisitor}
			var service, intent, node string
			for _, f := range turn.Frames {
				if service == "" {
					service = f.Service
				}
				if intent == "" {
					intent = c.intentOf[f.Service]
				}
				if node == "" && len(f.Actions) > 0 {
					node = strings.ToLower(f.Actions[0].Act)
					if f.Actions[0].Slot != "" {
						node += ":" + f.Actions[0].Slot
					}
				}
			}
			switch {
			case intent != "":
				m.Intent = &eventv1.Intent{Name: intent, Confidence: 1}
			case node != "":
				m.Intent = &eventv1.Intent{Name: strings.SplitN(node, ":", 2)[0], Confidence: 1}
			}
			if intent != "" && c.flows[intent] == flowActive {
				m.FlowId = intent
			}
			m.NodeId = node
			c.message(rt, m)
			if m.FlowId != "" && node != "" {
				c.lastStep[intent] = node
				c.add(time.Millisecond, &eventv1.Envelope{Payload: &eventv1.Envelope_FlowStep{FlowStep: &eventv1.FlowStep{FlowId: intent, StepId: node, NodeId: node}}})
			}
			for _, f := range turn.Frames {
				if sc := f.ServiceCall; sc != nil && sc.Method != "" {
					params := make([]string, 0, len(sc.Parameters))
					for _, k := range slices.Sorted(maps.Keys(sc.Parameters)) {
						params = append(params, k+"="+sc.Parameters[k])
					}
					c.add(time.Millisecond, &eventv1.Envelope{Payload: &eventv1.Envelope_DebugTrace{DebugTrace: &eventv1.DebugTrace{MessageId: lastVisitor, Steps: []*eventv1.DebugStep{
						{Name: "service_call " + f.Service + "." + sc.Method, Detail: strings.Join(params, ", "), DurationMs: uint32(40 + r.IntN(800))},
						{Name: "service_results", Detail: strconv.Itoa(len(f.ServiceResults)) + " results", DurationMs: 1},
					}}}})
				}
				flowOf := func() string {
					if sc := f.ServiceCall; sc != nil && c.flows[sc.Method] != flowNone {
						return sc.Method
					}
					return c.intentOf[f.Service]
				}
				for _, a := range f.Actions {
					switch a.Act {
					case "NOTIFY_SUCCESS":
						in := flowOf()
						if in == "" {
							continue
						}
						c.startFlow(f.Service, in) // a retry after a failure starts the flow again
						c.flows[in] = flowDone
						c.add(time.Millisecond, &eventv1.Envelope{Payload: &eventv1.Envelope_FlowCompleted{FlowCompleted: &eventv1.FlowCompleted{FlowId: in}}})
						c.add(time.Millisecond, &eventv1.Envelope{Payload: &eventv1.Envelope_GoalReached{GoalReached: &eventv1.GoalReached{GoalId: in, Name: f.Service + ": " + in}}})
					case "NOTIFY_FAILURE":
						in := flowOf()
						if in == "" {
							continue
						}
						c.startFlow(f.Service, in)
						c.flows[in] = flowDone
						c.add(time.Millisecond, &eventv1.Envelope{Payload: &eventv1.Envelope_FlowDropped{FlowDropped: &eventv1.FlowDropped{
							FlowId: in, StepId: "notify_failure", NodeId: "notify_failure", Failed: true}}})
					}
				}
			}
		}
	}
	// Flows the dialogue left unfinished were dropped.
	for _, in := range slices.Sorted(maps.Keys(c.flows)) {
		if c.flows[in] == flowActive {
			c.add(between(time.Second, 10*time.Second), &eventv1.Envelope{Payload: &eventv1.Envelope_FlowDropped{FlowDropped: &eventv1.FlowDropped{
				FlowId: in, StepId: c.lastStep[in], NodeId: c.lastStep[in]}}})
		}
	}
	if goodbye {
		c.conv.Closed = true
		c.add(between(time.Second, 10*time.Second), &eventv1.Envelope{Payload: &eventv1.Envelope_ConversationClosed{ConversationClosed: &eventv1.ConversationClosed{ClosedBy: eventv1.Actor_ACTOR_VISITOR}}})
	}
	scenario.Place(c.events, c.offsets, opts.Start, opts.Spread, i)
	c.conv.Events = c.events
	return c.conv, nil
}

func firstAct(frames []Frame) string {
	for _, f := range frames {
		if len(f.Actions) > 0 {
			return f.Actions[0].Act
		}
	}
	return ""
}

// MaxTextBytes is ingest's default limit on message text; longer utterances
// are cut at a character boundary.
const MaxTextBytes = 16 << 10

func clip(s string) string {
	if len(s) <= MaxTextBytes {
		return s
	}
	cut := MaxTextBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
