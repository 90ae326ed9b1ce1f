package verify

import (
	"hash/fnv"
	"slices"
	"strings"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// DefaultTaggingMaxMessages is tagging's default PARLEY_TAGGING_MAX_MESSAGES:
// how many recent messages its facts keep to recognise a message posted
// twice.
const DefaultTaggingMaxMessages = 50

// reportingMaxSeen is how many ids of messages, usage and leads reporting
// remembers per conversation to count a second stored copy only once
// (docs/events.md, duplicates).
const reportingMaxSeen = 2000

// streamFold is what verify derives itself, in stream order, from every
// event of one conversation in PARLEY_CONV (acknowledged or not, whoever
// produced it), to compare with each projection. It follows the documented
// semantics (docs/events.md, docs/operations.md), not the services' code.
type streamFold struct {
	// events counts stream messages; ids the distinct event ids (FNV-1a).
	events int
	ids    map[uint64]struct{}
	// ended counts conversation_ended events; endReason is the first one's.
	ended     int
	endReason eventv1.EndReason

	// Reporting: messages counts distinct message_posted event ids (rows
	// of messages FINAL). seen holds the ids of the first reportingMaxSeen
	// messages, usage and leads; a copy of one of them is not counted again
	// in conversations: messagesBeforeEnd counts the other messages before
	// the first conversation_ended, eventCount the other events.
	messages, messagesBeforeEnd, eventCount int
	seen                                    map[uint64]struct{}

	// tags are the tags in effect: those whose last tag_applied or
	// tag_removed (of any rule or detector) is a tag_applied. issues are the
	// detectors with an issue_detected.
	tags, issues map[string]bool

	lc lifecycleFold
	tg taggingFold
}

func newStreamFold() *streamFold {
	return &streamFold{ids: map[uint64]struct{}{}, seen: map[uint64]struct{}{}, tags: map[string]bool{}, issues: map[string]bool{}}
}

func hashID(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}

// observe folds the conversation's next stream message.
func (f *streamFold) observe(env *eventv1.Envelope, window int) {
	kind := eventbus.Kind(env)
	h := hashID(env.GetEventId())
	_, repeated := f.ids[h]
	f.ids[h] = struct{}{}
	f.events++
	endedBefore := f.ended > 0

	if !repeated && kind == "message_posted" {
		f.messages++
	}
	counted := false // a copy conversations does not count again
	switch kind {
	case "message_posted", "usage_recorded", "lead_captured":
		_, counted = f.seen[h]
		if !counted && len(f.seen) < reportingMaxSeen {
			f.seen[h] = struct{}{}
		}
	}
	if !counted {
		f.eventCount++
		if kind == "message_posted" && !endedBefore {
			f.messagesBeforeEnd++
		}
	}
	switch kind {
	case "conversation_ended":
		if f.ended == 0 {
			f.endReason = env.GetConversationEnded().GetReason()
		}
		f.ended++
	case "tag_applied":
		f.tags[env.GetTagApplied().GetTag()] = true
	case "tag_removed":
		delete(f.tags, env.GetTagRemoved().GetTag())
	case "issue_detected":
		f.issues[env.GetIssueDetected().GetIssue()] = true
	}
	f.lc.observe(env, kind)
	f.tg.observe(env, kind, endedBefore, window)
}

// sortedTags returns the tags in effect, sorted.
func (f *streamFold) sortedTags() []string { return sortedSet(f.tags) }

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k, ok := range m {
		if ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// activity tells whether lifecycle treats a kind as a client fact: every
// kind except lifecycle's and tagging's own and the annotations
// marker_added and location_resolved (docs/events.md).
func activity(kind string) bool {
	switch kind {
	case "", "marker_added", "location_resolved",
		"conversation_ended", "engagement_classified", "operator_no_response", "late_event_recorded",
		"tag_applied", "tag_removed", "label_added", "label_removed", "flagged", "unflagged", "issue_detected":
		return false
	}
	return true
}

// lifecycleCounts are the counts lifecycle keeps per conversation.
type lifecycleCounts struct {
	VisitorMessages, GoalsReached, FlowsCompleted, LateEvents int
}

func (c *lifecycleCounts) add(o lifecycleCounts) {
	c.VisitorMessages += o.VisitorMessages
	c.GoalsReached += o.GoalsReached
	c.FlowsCompleted += o.FlowsCompleted
	c.LateEvents += o.LateEvents
}

// lifecycleFold counts what lifecycle counts: visitor messages, goals
// reached and flows completed among the client facts the log orders before
// the conversation's end, and the client facts after it (late events).
// Every stream message counts, a second copy of an event too.
//
// Where the log ends a conversation: at the conversation_closed whose id is
// the conversation_ended's causation_id (the close ended it), else at the
// conversation_ended (a sweep or an administrator ended it; a close before
// it ended nothing). Client facts between the first close and the
// conversation_ended are held in gap until the conversation_ended decides.
type lifecycleFold struct {
	applied lifecycleCounts
	// closeID is the first conversation_closed before any
	// conversation_ended; gap counts client facts after it.
	closeID   string
	gap       lifecycleCounts
	gapEvents int
	endSeen   bool
}

func (l *lifecycleFold) observe(env *eventv1.Envelope, kind string) {
	if kind == "conversation_ended" {
		if !l.endSeen {
			l.endSeen = true
			if l.closeID != "" && env.GetCausationId() == l.closeID {
				l.applied.LateEvents += l.gapEvents
			} else {
				l.applied.add(l.gap)
			}
			l.gap, l.gapEvents = lifecycleCounts{}, 0
		}
		return
	}
	if !activity(kind) {
		return
	}
	if l.endSeen {
		l.applied.LateEvents++
		return
	}
	var c lifecycleCounts
	switch kind {
	case "message_posted":
		if env.GetMessagePosted().GetRole() == eventv1.Role_ROLE_VISITOR {
			c.VisitorMessages = 1
		}
	case "goal_reached":
		c.GoalsReached = 1
	case "flow_completed":
		c.FlowsCompleted = 1
	}
	if l.closeID != "" {
		l.gap.add(c)
		l.gapEvents++
		return
	}
	l.applied.add(c)
	if kind == "conversation_closed" {
		l.closeID = env.GetEventId()
	}
}

// expected returns the counts; while the log holds a close but no
// conversation_ended yet, the close is taken as the end.
func (l *lifecycleFold) expected() lifecycleCounts {
	c := l.applied
	c.LateEvents += l.gapEvents
	return c
}

// taggingCounts are the counts tagging keeps in each conversation's facts.
type taggingCounts struct {
	Events, VisitorMessages, BotMessages, AgentMessages int
}

// messages is the number of messages of every role counted.
func (c taggingCounts) messages() int { return c.VisitorMessages + c.BotMessages + c.AgentMessages }

// taggingFold counts what tagging's facts count: events of every kind but
// tagging's own, and messages by role until the first conversation_ended.
// A message whose message_id (event id when it has none) is among the
// facts' last window kept messages is a repeat and counts nowhere; only
// messages before the end are kept.
type taggingFold struct {
	counts taggingCounts
	kept   []uint64 // hashes of the last window kept message ids
}

func (t *taggingFold) observe(env *eventv1.Envelope, kind string, ended bool, window int) {
	switch kind {
	case "tag_applied", "tag_removed", "label_added", "label_removed", "flagged", "unflagged", "issue_detected":
		return
	}
	if m := env.GetMessagePosted(); m != nil {
		id := m.GetMessageId()
		if id == "" {
			id = env.GetEventId()
		}
		h := hashID(id)
		if slices.Contains(t.kept, h) {
			return
		}
		if !ended {
			switch m.GetRole() {
			case eventv1.Role_ROLE_VISITOR:
				t.counts.VisitorMessages++
			case eventv1.Role_ROLE_BOT:
				t.counts.BotMessages++
			case eventv1.Role_ROLE_AGENT:
				t.counts.AgentMessages++
			}
			t.kept = append(t.kept, h)
			if len(t.kept) > window {
				t.kept = slices.Delete(t.kept, 0, len(t.kept)-window)
			}
		}
	}
	t.counts.Events++
}

// enumName turns END_REASON_VISITOR_CLOSED into visitor_closed (the
// spelling of ClickHouse and tagging's facts); UNSPECIFIED becomes "".
func enumName(full, prefix string) string {
	n := strings.ToLower(strings.TrimPrefix(full, prefix))
	if n == "unspecified" {
		return ""
	}
	return n
}
