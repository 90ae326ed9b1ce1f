package mail

import (
	"fmt"
	"time"
)

// Role is who wrote a transcript message.
type Role string

// Roles of TranscriptMessage.
const (
	RoleVisitor Role = "visitor"
	RoleBot     Role = "bot"
	RoleAgent   Role = "agent"
	// RoleSystem messages are left out of transcripts.
	RoleSystem Role = "system"
)

// Audience is who a transcript is for.
type Audience int

const (
	// AudienceVisitor: the visitor's own copy ("You" and "Assistant").
	AudienceVisitor Audience = iota + 1
	// AudienceAgent: a support agent's copy, naming the visitor and
	// giving the conversation's id and channel.
	AudienceAgent
)

// Conversation is what a transcript says about its conversation.
type Conversation struct {
	TenantID string
	ID       string
	// Channel ("web_widget", "whatsapp", ...) and VisitorName are shown to
	// agents.
	Channel     string
	VisitorName string
	StartedAt   time.Time
	// Link is where the conversation can be read online (a share link for
	// a visitor, the console for an agent); http or https, optional.
	Link string
}

// TranscriptMessage is one message of a transcript.
type TranscriptMessage struct {
	At   time.Time
	Role Role
	// AgentName labels RoleAgent messages ("Agent" when empty).
	AgentName string
	Text      string
}

// transcriptItem is one message as the templates show it.
type transcriptItem struct {
	Label, Time, DateHeading string
	Visitor                  bool
	Lines                    []string
}

type transcriptBody struct {
	Intro, Zone, Link, LinkText string
	Items                       []transcriptItem
}

// Date and time layouts of transcripts.
const (
	dateLayout = "Monday, 2 January 2006"
	timeLayout = "15:04"
)

// RenderTranscript renders a conversation's transcript for audience, times
// in tz (an IANA name; "" is UTC), system messages left out. Everything
// user-provided is escaped. The Message has no recipients and no Key yet:
// the caller sets To and Key. Bad input is a *FieldError (time_zone,
// branding.<field>, conversation.<field>).
func RenderTranscript(b Branding, c Conversation, msgs []TranscriptMessage, tz string, aud Audience) (Message, error) {
	loc, err := prepare(b, tz)
	if err != nil {
		return Message{}, err
	}
	if c.ID == "" {
		return Message{}, &FieldError{"conversation.id", "required"}
	}
	if c.Link != "" {
		if err := checkURL("conversation.link", c.Link, true); err != nil {
			return Message{}, err
		}
	}
	if aud != AudienceVisitor && aud != AudienceAgent {
		return Message{}, &FieldError{"audience", "want visitor or agent"}
	}
	brand := b.withDefaults()
	visitor := "Visitor"
	if aud == AudienceAgent && c.VisitorName != "" {
		visitor = clean(c.VisitorName)
	}
	if aud == AudienceVisitor {
		visitor = "You"
	}
	body := transcriptBody{Link: c.Link, Zone: zoneName(loc, firstTime(c, msgs))}
	var title, subject string
	if aud == AudienceVisitor {
		title = "Your conversation with " + brand.Name
		subject = title
		body.Intro = "Here is a copy of your conversation with " + brand.Name + "."
		body.LinkText = "View the conversation online"
	} else {
		title = "Conversation transcript"
		subject = fmt.Sprintf("Transcript: %s (%s)", clean(c.ID), visitor)
		body.Intro = fmt.Sprintf("Conversation %s with %s", clean(c.ID), visitor)
		if c.Channel != "" {
			body.Intro += " on " + clean(c.Channel)
		}
		if !c.StartedAt.IsZero() {
			body.Intro += ", started " + c.StartedAt.In(loc).Format(dateLayout+" "+timeLayout)
		}
		body.Intro += "."
		body.LinkText = "Open the conversation"
	}
	lastDay := ""
	for _, m := range msgs {
		var label string
		switch m.Role {
		case RoleVisitor:
			label = visitor
		case RoleBot:
			label = "Assistant"
		case RoleAgent:
			label = "Agent"
			if m.AgentName != "" {
				label = clean(m.AgentName)
			}
		default:
			continue
		}
		at := m.At.In(loc)
		it := transcriptItem{Label: label, Time: at.Format(timeLayout), Visitor: m.Role == RoleVisitor, Lines: lines(m.Text)}
		if day := at.Format(dateLayout); day != lastDay {
			it.DateHeading, lastDay = day, day
		}
		body.Items = append(body.Items, it)
	}
	return transcriptView.render(newPage(brand, title, body), c.TenantID, subject)
}

// firstTime is when the transcript starts, for naming the zone.
func firstTime(c Conversation, msgs []TranscriptMessage) time.Time {
	if !c.StartedAt.IsZero() {
		return c.StartedAt
	}
	if len(msgs) > 0 {
		return msgs[0].At
	}
	return time.Now()
}

// zoneName is "Europe/Berlin (CET)", or "UTC".
func zoneName(loc *time.Location, at time.Time) string {
	abbr, _ := at.In(loc).Zone()
	if loc.String() == abbr {
		return abbr
	}
	return loc.String() + " (" + abbr + ")"
}
