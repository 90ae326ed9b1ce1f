package natsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// ServerUsers are the users of an embedded server (local stack, tests): each
// service with its permissions and the operator with all, with the given
// passwords (keyed by user name; users without one are left out).
func ServerUsers(passwords map[string]string) ([]*server.User, error) {
	var out []*server.User
	for _, s := range Services() {
		pw, ok := passwords[s]
		if !ok {
			continue
		}
		p, err := For(s)
		if err != nil {
			return nil, err
		}
		out = append(out, &server.User{Username: s, Password: pw, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: p.Publish, Deny: p.PublishDeny},
			Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
		}})
	}
	if pw, ok := passwords[Operator]; ok {
		out = append(out, &server.User{Username: Operator, Password: pw})
	}
	if len(out) == 0 {
		return nil, errors.New("natsauth: no passwords")
	}
	return out, nil
}

// WaitForStreams waits until every named stream exists, for services that
// may not create the streams themselves (PARLEY_NATS_WAIT_FOR_STREAMS): the
// stream manager (ingest) creates them.
func WaitForStreams(ctx context.Context, js jetstream.JetStream, log *slog.Logger, names ...string) error {
	logged := false
	for _, name := range names {
		for {
			_, err := js.Stream(ctx, name)
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("natsauth: stream %s: %w", name, err)
			}
			if !logged && log != nil {
				log.Info("waiting for the stream manager (ingest) to create the streams", "stream", name)
				logged = true
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("natsauth: waiting for stream %s: %w", name, ctx.Err())
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil
}
