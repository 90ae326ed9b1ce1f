package mail

import (
	"fmt"
	"strings"
	"time"
)

// ReportReady is the "your report is ready" mail.
type ReportReady struct {
	TenantID string
	// Name of the report ("Conversations, last 30 days").
	Name string
	// DownloadURL is the report's download link (http or https).
	DownloadURL string
	// ExpiresAt is when the link stops working (zero: not shown).
	ExpiresAt time.Time
	// To are the requester's addresses, Extra the further recipients
	// asked for; the mail goes to both, each address once.
	To, Extra []string
}

// maxRecipients bounds the recipients of one mail.
const maxRecipients = 50

// RenderReportReady renders the mail, its expiry time in tz. Bad input is
// a *FieldError (name, download_url, to[i], extra[i], time_zone,
// branding.<field>).
func RenderReportReady(b Branding, r ReportReady, tz string) (Message, error) {
	loc, err := prepare(b, tz)
	if err != nil {
		return Message{}, err
	}
	if strings.TrimSpace(r.Name) == "" {
		return Message{}, &FieldError{"name", "required"}
	}
	if err := checkLine("name", r.Name, 200); err != nil {
		return Message{}, err
	}
	if err := checkURL("download_url", r.DownloadURL, true); err != nil {
		return Message{}, err
	}
	var to []string
	seen := map[string]bool{}
	for _, list := range []struct {
		field string
		addrs []string
	}{{"to", r.To}, {"extra", r.Extra}} {
		for i, a := range list.addrs {
			if err := checkAddress(fmt.Sprintf("%s[%d]", list.field, i), a); err != nil {
				return Message{}, err
			}
			if k := strings.ToLower(a); !seen[k] {
				seen[k] = true
				to = append(to, a)
			}
		}
	}
	if len(to) == 0 {
		return Message{}, &FieldError{"to", "at least one recipient is required"}
	}
	if len(to) > maxRecipients {
		return Message{}, &FieldError{"extra", fmt.Sprintf("more than %d recipients", maxRecipients)}
	}
	body := struct{ Name, URL, Expires string }{Name: r.Name, URL: r.DownloadURL}
	if !r.ExpiresAt.IsZero() {
		at := r.ExpiresAt.In(loc)
		body.Expires = at.Format(dateLayout+" "+timeLayout) + " " + zoneName(loc, at)
	}
	m, err := reportReadyView.render(newPage(b, "Your report is ready", body), r.TenantID, "Report ready: "+r.Name)
	m.To = to
	return m, err
}
