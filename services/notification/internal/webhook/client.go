package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Client sends signed webhook requests.
type Client struct {
	http    *http.Client
	maxBody int64
}

// NewClient returns a client that applies policy on every connection, goes
// through no proxy, follows no redirect (a redirect is a failed attempt)
// and reads at most maxBody bytes of a response.
func NewClient(policy Policy, timeout time.Duration, maxBody int64) *Client {
	d := policy.Dialer(net.Dialer{Timeout: timeout})
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &Client{maxBody: maxBody, http: &http.Client{
		Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Request is one webhook call.
type Request struct {
	URL, ID string
	At      time.Time
	Body    []byte
	// Secrets sign the request, each adding a signature (a rotated secret
	// keeps signing for a while).
	Secrets []string
}

// Result is what came back.
type Result struct {
	Status  int
	Latency time.Duration
	// Err is why the attempt failed (nil on a 2xx answer): a refused or
	// failed connection, a timeout, or the status.
	Err error
}

// Send posts r and reads (a bounded part of) the answer.
func (c *Client) Send(ctx context.Context, r Request) Result {
	var sigs []string
	for _, s := range r.Secrets {
		sig, err := Sign(s, r.ID, r.At, r.Body)
		if err != nil {
			return Result{Err: err}
		}
		sigs = append(sigs, sig)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		return Result{Err: fmt.Errorf("bad request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Parley-Webhooks/1")
	req.Header.Set("webhook-id", r.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(r.At.Unix(), 10))
	req.Header.Set("webhook-signature", strings.Join(sigs, " "))
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return Result{Latency: time.Since(start), Err: describe(err)}
	}
	_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, c.maxBody))
	_ = resp.Body.Close()
	res := Result{Status: resp.StatusCode, Latency: time.Since(start)}
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		res.Err = fmt.Errorf("status %d", resp.StatusCode)
	case rerr != nil:
		res.Err = fmt.Errorf("reading the response: %w", rerr)
	}
	return res
}

// describe shortens a client error to what the delivery log shows.
func describe(err error) error {
	if errors.Is(err, ErrRefused) {
		var ue interface{ Unwrap() error }
		for errors.As(err, &ue) && !strings.HasPrefix(err.Error(), ErrRefused.Error()) {
			err = ue.Unwrap()
		}
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout") {
		return errors.New("timed out")
	}
	return err
}
