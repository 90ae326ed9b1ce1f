package mail

import (
	"bytes"
	"embed"
	"errors"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
	_ "time/tzdata" // tenants' time zones on images without zoneinfo
)

//go:embed templates
var templateFS embed.FS

// views are the parsed templates of one kind of mail.
type view struct {
	html *htmltemplate.Template
	text *texttemplate.Template
}

func mustView(name string) view {
	base := htmltemplate.Must(htmltemplate.ParseFS(templateFS, "templates/layout.html"))
	return view{
		html: htmltemplate.Must(base.ParseFS(templateFS, "templates/"+name+".html")),
		text: texttemplate.Must(texttemplate.ParseFS(templateFS, "templates/"+name+".txt")),
	}
}

// Parsed once; templates are read-only afterwards.
var (
	transcriptView  = mustView("transcript")
	reportReadyView = mustView("report_ready")
	noticeView      = mustView("notice")
)

// page is what every template gets: the branding (validated), the
// colours as CSS (checked against colorPattern), the title and the mail's
// own data.
type page struct {
	Brand           Branding
	Primary, Accent htmltemplate.CSS
	Title           string
	Body            any
}

func newPage(b Branding, title string, body any) page {
	b = b.withDefaults()
	return page{
		Brand: b, Title: title, Body: body,
		// #rgb or #rrggbb only (Branding.Validate), so safe in a style.
		Primary: htmltemplate.CSS(b.PrimaryColor), Accent: htmltemplate.CSS(b.AccentColor),
	}
}

// render fills both templates into a Message with the branding's sender
// name and reply-to.
func (v view) render(p page, tenant, subject string) (Message, error) {
	var h, t bytes.Buffer
	if err := v.html.ExecuteTemplate(&h, "layout", p); err != nil {
		return Message{}, err
	}
	if err := v.text.Execute(&t, p); err != nil {
		return Message{}, err
	}
	return Message{
		TenantID: tenant, FromName: p.Brand.Name, ReplyTo: p.Brand.ReplyTo,
		Subject: oneLine(subject), Text: t.String(), HTML: h.String(),
	}, nil
}

// prepare checks the branding (its fields reported as branding.<field>)
// and loads the time zone: what every Render function starts with.
func prepare(b Branding, tz string) (*time.Location, error) {
	if err := b.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return nil, &FieldError{"branding." + fe.Field, fe.Description}
		}
		return nil, err
	}
	return location(tz)
}

// location loads an IANA time zone; "" is UTC. "Local" (the server's
// zone) is refused: a tenant's mail must not depend on where it runs.
func location(tz string) (*time.Location, error) {
	if tz == "" {
		return time.UTC, nil
	}
	if tz == "Local" {
		return nil, &FieldError{"time_zone", "want an IANA time zone name (Europe/Berlin)"}
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, &FieldError{"time_zone", "unknown time zone " + tz + "; want an IANA name (Europe/Berlin)"}
	}
	return loc, nil
}

// lines splits user text for display: normalised newlines, no control
// characters but tabs, valid UTF-8. Escaping is the templates' job.
func lines(s string) []string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}

// clean is one line of user text (names).
func clean(s string) string { return strings.Join(lines(s), " ") }
