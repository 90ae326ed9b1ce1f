package mailcatcher

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Envelope is what the SMTP transaction said, as opposed to the headers.
type Envelope struct {
	// From is the MAIL FROM address, To the RCPT TO addresses.
	From string   `json:"from"`
	To   []string `json:"to"`
	// AuthUser is the user the client authenticated as ("" if none).
	AuthUser string `json:"auth_user,omitempty"`
	// TLS tells whether the session was encrypted (STARTTLS).
	TLS bool `json:"tls"`
}

// Meta describes one stored message (its <id>.json file).
type Meta struct {
	ID       string    `json:"id"`
	Received time.Time `json:"received"`
	Envelope Envelope  `json:"envelope"`
	Size     int       `json:"size"`
	// Headers are the message's headers, decoded (RFC 2047), in order.
	Headers []Field `json:"headers"`
	// ParseError is set when the message could not be parsed; the raw
	// message is stored anyway.
	ParseError string `json:"parse_error,omitempty"`
}

// Header returns the first value of the header name ("" if absent).
func (m Meta) Header(name string) string {
	for _, f := range m.Headers {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Mail is one stored message with its raw bytes and text part.
type Mail struct {
	Meta
	Raw []byte
	// Text is the text/plain part, decoded ("" when there is none).
	Text string
	// HTML is the text/html part, decoded.
	HTML string
}

// Store is a directory of caught messages: <id>.eml (the raw message) and
// <id>.json (Meta). IDs sort by arrival.
type Store struct {
	Dir string
}

var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{9}Z-[0-9a-f]{8}$`)

// ErrNotFound is returned for an unknown or malformed message id.
var ErrNotFound = errors.New("mailcatcher: no such message")

// Save stores a message and returns its Meta. The .json file is written
// last (atomically), so readers never see half a message.
func (s *Store) Save(env Envelope, r io.Reader) (Meta, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return Meta{}, err
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	now := time.Now().UTC()
	m := Meta{
		ID:       now.Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(rnd[:]),
		Received: now, Envelope: env, Size: len(raw),
	}
	if p, err := Parse(raw); err != nil {
		m.ParseError = err.Error()
	} else {
		m.Headers = p.Headers
	}
	if err := writeAtomic(filepath.Join(s.Dir, m.ID+".eml"), raw); err != nil {
		return Meta{}, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Meta{}, err
	}
	if err := writeAtomic(filepath.Join(s.Dir, m.ID+".json"), b); err != nil {
		return Meta{}, err
	}
	return m, nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("mailcatcher: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("mailcatcher: %w", err)
	}
	return nil
}

// List returns every stored message's Meta, oldest first. A missing
// directory holds no messages.
func (s *Store) List() ([]Meta, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mailcatcher: %w", err)
	}
	var out []Meta
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !idPattern.MatchString(id) {
			continue
		}
		m, err := s.meta(id)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Meta) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (s *Store) meta(id string) (Meta, error) {
	b, err := os.ReadFile(filepath.Join(s.Dir, id+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return Meta{}, ErrNotFound
	}
	if err != nil {
		return Meta{}, fmt.Errorf("mailcatcher: %w", err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("mailcatcher: %s: %w", id, err)
	}
	return m, nil
}

// Load returns one message: its Meta, raw bytes and decoded text and HTML
// parts. A prefix of an id is enough when it matches one message only.
func (s *Store) Load(id string) (*Mail, error) {
	id, err := s.resolve(id)
	if err != nil {
		return nil, err
	}
	m, err := s.meta(id)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(s.Dir, id+".eml"))
	if err != nil {
		return nil, fmt.Errorf("mailcatcher: %w", err)
	}
	mail := &Mail{Meta: m, Raw: raw}
	if p, err := Parse(raw); err == nil {
		mail.Text, mail.HTML = p.Text, p.HTML
	}
	return mail, nil
}

// resolve turns an id, a unique prefix of one or its random suffix (after
// the '-') into the id; only ids found in the directory come back, so what
// the user typed never becomes a path.
func (s *Store) resolve(id string) (string, error) {
	if id == "" {
		return "", ErrNotFound
	}
	all, err := s.List()
	if err != nil {
		return "", err
	}
	var found []string
	for _, m := range all {
		if strings.HasPrefix(m.ID, id) || strings.HasSuffix(m.ID, "-"+id) {
			found = append(found, m.ID)
		}
	}
	switch len(found) {
	case 0:
		return "", ErrNotFound
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("mailcatcher: %q matches %d messages; give more of the id", id, len(found))
	}
}
