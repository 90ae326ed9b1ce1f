package mail

import (
	"errors"
	"fmt"

	gomail "github.com/wneessen/go-mail"
)

// Class says whether a failed send may succeed later.
type Class int

const (
	// Transient failures are worth retrying: the server was unreachable,
	// the connection, TLS or authentication failed, or the server
	// answered 4xx (greylisting, mailbox busy, "try again later").
	// Configuration faults count too: once fixed, the mail goes out.
	Transient Class = iota + 1
	// Permanent failures will fail again: the server refused a recipient
	// or the message with 5xx, or the message itself is invalid (a
	// malformed address).
	Permanent
)

func (c Class) String() string {
	if c == Permanent {
		return "permanent"
	}
	return "transient"
}

// Error is a failed send.
type Error struct {
	Class Class
	// Code is the SMTP reply code (0 when the server did not answer).
	Code int
	err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("mail: send (%s): %v", e.Class, e.err)
}

func (e *Error) Unwrap() error { return e.err }

// Classify tells whether err (from Send) is Transient or Permanent; an
// error it does not know is Transient, so that no mail is dropped for it.
func Classify(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return Transient
}

// IsPermanent reports whether err is a permanent failure (Classify).
func IsPermanent(err error) bool { return err != nil && Classify(err) == Permanent }

// classify wraps go-mail's error.
func classify(err error) *Error {
	out := &Error{Class: Transient, err: err}
	var se *gomail.SendError
	if !errors.As(err, &se) {
		// Dial, TLS or AUTH: the server or our access to it.
		return out
	}
	// With several refused recipients, go-mail keeps the last one's code.
	out.Code = se.ErrorCode()
	switch se.Reason {
	case gomail.ErrSMTPRcptTo, gomail.ErrSMTPData, gomail.ErrSMTPDataClose:
		if out.Code >= 500 && out.Code < 600 {
			out.Class = Permanent
		}
	case gomail.ErrGetSender, gomail.ErrGetRcpts, gomail.ErrNoUnencoded:
		out.Class = Permanent
	}
	return out
}

// PermanentError marks err (a template or input fault of the caller's) as
// a permanent failure: retrying cannot help.
func PermanentError(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Class: Permanent, err: err}
}

// Reason is what the tenant may read about a failed send in the delivery
// log: the SMTP server's reply when it answered (the code and its text,
// e.g. "550 5.1.1 no such user"), a mail that cannot be built, or else a
// generic line. Connection, TLS and login details name the operator's
// hosts: they stay in the service's logs.
func Reason(err error) string {
	var e *Error
	var fe *FieldError
	switch {
	case errors.As(err, &fe):
		return fe.Error()
	case !errors.As(err, &e):
		return "the mail could not be prepared (a dependency is unavailable); retrying"
	case e.Code != 0 || e.Class == Permanent:
		return e.Error()
	}
	return "the mail server could not be reached or refused the connection; retrying"
}
