package mailcatcher

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// Field is one header field, its value decoded.
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Parsed is what Parse finds in a message.
type Parsed struct {
	// Headers in the order of the message, values RFC 2047-decoded.
	Headers []Field
	// Text and HTML are the first text/plain and text/html parts, with
	// their transfer encoding undone.
	Text, HTML string
}

// Limits of Parse: messages come from any SMTP client.
const (
	maxDepth = 8
	maxParts = 100
)

// Parse reads a message's headers and its text and HTML parts. It is
// lenient (a part it cannot read is skipped) but never trusts the input:
// nesting and part counts are bounded.
func Parse(raw []byte) (*Parsed, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("mailcatcher: parse: %w", err)
	}
	p := &Parsed{Headers: decodeHeaders(raw)}
	parts := 0
	p.walk(msg.Header, msg.Body, 0, &parts)
	return p, nil
}

// headerGetter is what walk needs of a header.
type headerGetter interface{ Get(string) string }

var wordDecoder = &mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
	// UTF-8 and ASCII are decoded by the standard library; other
	// charsets are kept encoded rather than guessed.
	return nil, fmt.Errorf("charset %s not supported", charset)
}}

// decodeHeaders lists the header fields in order (net/mail's map loses
// it), unfolded and RFC 2047-decoded.
func decodeHeaders(raw []byte) []Field {
	end := bytes.Index(raw, []byte("\r\n\r\n"))
	if alt := bytes.Index(raw, []byte("\n\n")); end < 0 || (alt >= 0 && alt < end) {
		end = alt
	}
	if end < 0 {
		end = len(raw)
	}
	var out []Field
	for _, line := range strings.Split(strings.ReplaceAll(string(raw[:end]), "\r\n", "\n"), "\n") {
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 {
			out[len(out)-1].Value += " " + strings.TrimSpace(line)
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		out = append(out, Field{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)})
	}
	for i := range out {
		if d, err := wordDecoder.DecodeHeader(out[i].Value); err == nil {
			out[i].Value = d
		}
		out[i].Value = strings.ToValidUTF8(out[i].Value, "\uFFFD")
	}
	return out
}

// walk finds the first text/plain and text/html parts under one entity.
func (p *Parsed) walk(h headerGetter, body io.Reader, depth int, parts *int) {
	*parts++
	if depth > maxDepth || *parts > maxParts {
		return
	}
	ct := h.Get("Content-Type")
	if ct == "" {
		ct = "text/plain"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return
	}
	if strings.HasPrefix(mt, "multipart/") {
		if params["boundary"] == "" {
			return
		}
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextRawPart()
			if err != nil {
				return
			}
			p.walk(part.Header, part, depth+1, parts)
			if *parts > maxParts {
				return
			}
		}
	}
	if mt != "text/plain" && mt != "text/html" {
		return
	}
	if cd := h.Get("Content-Disposition"); strings.HasPrefix(strings.ToLower(strings.TrimSpace(cd)), "attachment") {
		return
	}
	text, err := decodeBody(h.Get("Content-Transfer-Encoding"), body)
	if err != nil {
		return
	}
	if mt == "text/plain" && p.Text == "" {
		p.Text = text
	}
	if mt == "text/html" && p.HTML == "" {
		p.HTML = text
	}
}

// decodeBody undoes a transfer encoding; a body that is not what its
// encoding says is kept as it came. The result is valid UTF-8.
func decodeBody(cte string, r io.Reader) (string, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	b := raw
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		b, err = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(raw)))
	case "base64":
		b, err = io.ReadAll(base64.NewDecoder(base64.StdEncoding, bytes.NewReader(raw))) // skips CR and LF
	}
	if err != nil {
		b = raw
	}
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s, nil
}
