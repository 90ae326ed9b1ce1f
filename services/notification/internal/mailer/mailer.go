// Package mailer is notification's Mailer over SMTP (internal/mail): event
// emails and notices from the notice template, transcripts read from the
// event log, every mail with the tenant's branding and time zone.
package mailer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/services/notification/internal/delivery"
	"github.com/parley-dev/parley/services/notification/internal/mail"
	"github.com/parley-dev/parley/services/notification/internal/store"
)

// DefaultMaxTranscriptMessages bounds the messages of one transcript.
const DefaultMaxTranscriptMessages = 1000

// Config holds a Mailer's dependencies.
type Config struct {
	// Sender sends the rendered mails.
	Sender *mail.Sender
	// Bus reads conversations' events for transcripts.
	Bus *eventbus.Bus
	// Store holds the tenants' branding.
	Store *store.Store
	// TimeZone returns a tenant's IANA time zone (libs/tenancy).
	TimeZone func(ctx context.Context, tenant string) (string, error)
	// MaxTranscriptMessages bounds one transcript (the first ones are
	// kept); default DefaultMaxTranscriptMessages.
	MaxTranscriptMessages int
	Log                   *slog.Logger
}

// Mailer implements delivery.Mailer.
type Mailer struct{ cfg Config }

// New returns a Mailer.
func New(cfg Config) *Mailer {
	if cfg.MaxTranscriptMessages <= 0 {
		cfg.MaxTranscriptMessages = DefaultMaxTranscriptMessages
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Mailer{cfg: cfg}
}

// Send renders m with the tenant's branding and sends it. Errors are
// classified as mail.Classify expects: outages (store, event log, SMTP)
// are transient; input that cannot be rendered and 5xx refusals are
// permanent.
func (m *Mailer) Send(ctx context.Context, msg delivery.MailMessage) error {
	sb, err := m.cfg.Store.Branding(ctx, msg.TenantID)
	if err != nil {
		return fmt.Errorf("mailer: reading the branding: %w", err)
	}
	b := Branding(sb)
	var out mail.Message
	if msg.TranscriptOf != "" {
		out, err = m.transcript(ctx, b, msg)
	} else {
		n := mail.Notice{TenantID: msg.TenantID, Subject: msg.Subject, Text: msg.Text}
		if msg.EventKind != "" {
			n.Text = fmt.Sprintf("Parley recorded %s in conversation %s.\n\nThe event and the conversation at that point:", msg.EventKind, msg.Conversation)
			n.Details = indent(msg.Text)
		}
		out, err = mail.RenderNotice(b, n)
	}
	if err != nil {
		var fe *mail.FieldError
		if errors.As(err, &fe) {
			return mail.PermanentError(err)
		}
		return err
	}
	out.To, out.Key = msg.To, msg.Key
	return m.cfg.Sender.Send(ctx, out)
}

// Branding converts the stored branding.
func Branding(b store.Branding) mail.Branding {
	return mail.Branding{Name: b.Name, PrimaryColor: b.PrimaryColor, AccentColor: b.AccentColor, LogoURL: b.LogoURL,
		ReplyTo: b.ReplyTo, Contact: b.Contact}
}

func (m *Mailer) transcript(ctx context.Context, b mail.Branding, msg delivery.MailMessage) (mail.Message, error) {
	tz, err := m.cfg.TimeZone(ctx, msg.TenantID)
	if err != nil {
		return mail.Message{}, fmt.Errorf("mailer: reading the time zone: %w", err)
	}
	conv, msgs, err := ReadTranscript(ctx, m.cfg.Bus, msg.TenantID, msg.TranscriptOf, m.cfg.MaxTranscriptMessages)
	if err != nil {
		return mail.Message{}, err
	}
	aud := mail.AudienceVisitor
	if msg.Audience == delivery.AudienceAgent {
		aud = mail.AudienceAgent
	}
	return mail.RenderTranscript(b, conv, msgs, tz, aud)
}

// indent pretty-prints a JSON payload (anything else stays as it is).
func indent(s string) string {
	var b bytes.Buffer
	if json.Indent(&b, []byte(s), "", "  ") != nil {
		return s
	}
	return b.String()
}
