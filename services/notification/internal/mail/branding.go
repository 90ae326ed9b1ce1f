package mail

import (
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Branding is how a tenant's mails look. Every field is optional; empty
// ones take Parley's defaults.
type Branding struct {
	// Name is the brand shown in the header, the sender's display name and
	// the subject.
	Name string
	// PrimaryColor (header bar, links) and AccentColor (assistant
	// messages' background) are #rgb or #rrggbb.
	PrimaryColor, AccentColor string
	// LogoURL is an absolute https URL of the logo shown in the header.
	LogoURL string
	// ReplyTo is where replies go (the tenant's support address).
	ReplyTo string
	// Contact is a line of contact information for the footer.
	Contact string
}

// What empty Branding fields become.
const (
	defaultName    = "Parley"
	defaultPrimary = "#2563eb"
	defaultAccent  = "#dbeafe"
)

// FieldError is input that cannot be used, naming the field (relative to
// the value checked: "primary_color", "messages[3].text"); the API answers
// grpcx.Invalid(prefix+Field, Description).
type FieldError struct {
	Field, Description string
}

func (e *FieldError) Error() string { return "mail: " + e.Field + ": " + e.Description }

var colorPattern = regexp.MustCompile(`^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$`)

// Limits of Branding.
const (
	maxNameLen    = 100
	maxContactLen = 300
	maxURLLen     = 2048
)

// Validate checks b; the error is a *FieldError.
func (b Branding) Validate() error {
	if err := checkLine("name", b.Name, maxNameLen); err != nil {
		return err
	}
	for _, c := range []struct{ field, v string }{{"primary_color", b.PrimaryColor}, {"accent_color", b.AccentColor}} {
		if c.v != "" && !colorPattern.MatchString(c.v) {
			return &FieldError{c.field, "want #rgb or #rrggbb"}
		}
	}
	if b.LogoURL != "" {
		if err := checkURL("logo_url", b.LogoURL, false); err != nil {
			return err
		}
	}
	if b.ReplyTo != "" {
		if err := checkAddress("reply_to", b.ReplyTo); err != nil {
			return err
		}
	}
	return checkLine("contact", b.Contact, maxContactLen)
}

// withDefaults fills empty fields.
func (b Branding) withDefaults() Branding {
	if b.Name == "" {
		b.Name = defaultName
	}
	if b.PrimaryColor == "" {
		b.PrimaryColor = defaultPrimary
	}
	if b.AccentColor == "" {
		b.AccentColor = defaultAccent
	}
	return b
}

func checkLine(field, v string, max int) error {
	switch {
	case !utf8.ValidString(v):
		return &FieldError{field, "not valid UTF-8"}
	case utf8.RuneCountInString(v) > max:
		return &FieldError{field, fmt.Sprintf("longer than %d characters", max)}
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return &FieldError{field, "contains control characters"}
	}
	return nil
}

// checkURL accepts absolute https URLs (and http when allowHTTP).
func checkURL(field, v string, allowHTTP bool) error {
	if len(v) > maxURLLen {
		return &FieldError{field, fmt.Sprintf("longer than %d bytes", maxURLLen)}
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || u.User != nil || !(u.Scheme == "https" || allowHTTP && u.Scheme == "http") {
		if allowHTTP {
			return &FieldError{field, "want an absolute http or https URL"}
		}
		return &FieldError{field, "want an absolute https URL"}
	}
	return nil
}

// checkAddress accepts one bare address (no display name).
func checkAddress(field, v string) error {
	a, err := mail.ParseAddress(v)
	if err != nil || a.Name != "" || a.Address != v {
		return &FieldError{field, "want an email address (name@example.com)"}
	}
	return nil
}
