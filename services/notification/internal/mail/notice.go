package mail

import "strings"

// Notice is a mail of prose and optional details: an event a subscription
// selected, an endpoint Parley disabled.
type Notice struct {
	TenantID string
	// Subject is the mail's subject and title.
	Subject string
	// Text is the body; blank lines separate paragraphs.
	Text string
	// Details, when set, is shown as preformatted text (an event's JSON).
	Details string
}

type noticeBody struct {
	Paragraphs [][]string
	Details    string
}

// RenderNotice renders n with the branding. Everything user-provided is
// escaped in the HTML part. Bad input is a *FieldError (branding.<field>,
// subject).
func RenderNotice(b Branding, n Notice) (Message, error) {
	if _, err := prepare(b, ""); err != nil {
		return Message{}, err
	}
	if strings.TrimSpace(n.Subject) == "" {
		return Message{}, &FieldError{"subject", "required"}
	}
	body := noticeBody{Details: strings.Join(lines(n.Details), "\n")}
	var para []string
	for _, l := range lines(n.Text) {
		if strings.TrimSpace(l) == "" {
			if len(para) > 0 {
				body.Paragraphs, para = append(body.Paragraphs, para), nil
			}
			continue
		}
		para = append(para, l)
	}
	if len(para) > 0 {
		body.Paragraphs = append(body.Paragraphs, para)
	}
	title := oneLine(n.Subject)
	return noticeView.render(newPage(b.withDefaults(), title, body), n.TenantID, title)
}
