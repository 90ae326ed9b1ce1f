package localinfra

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/natsauth"
)

// NATSOptions configure an embedded NATS server.
type NATSOptions struct {
	// Dir holds JetStream's file store.
	Dir  string
	Host string
	// Port to listen on; -1 picks a free one.
	Port int
	// SyncAlways makes JetStream fsync every write before acknowledging it
	// (production setting). When false, JetStream flushes on its own
	// schedule (every two minutes by default), which is faster but can lose
	// acknowledged writes on power failure.
	SyncAlways bool
	// Debug enables the server's own logging to stderr.
	Debug bool
	// Passwords, when set, make the server require authentication: one user
	// per service with the permissions of natsauth.For, and the operator,
	// with these passwords (keyed by user name).
	Passwords map[string]string
	// AnonymousAs lets clients without credentials in as this user (e.g.
	// natsauth.Operator for local tools); empty: they are refused.
	AnonymousAs string
}

// NATSLocalPasswords are the passwords of the local stack's NATS users (one
// per service and the operator); the server listens on loopback only.
func NATSLocalPasswords() map[string]string {
	pw := map[string]string{natsauth.Operator: "parley-local-" + natsauth.Operator}
	for _, s := range natsauth.Services() {
		pw[s] = "parley-local-" + s
	}
	return pw
}

// NATSServiceConfig is base with a service's local NATS user, and, for all
// but the stream manager (ingest), waiting for the streams instead of
// creating them, as in production.
func NATSServiceConfig(base config.NATS, service string) config.NATS {
	base.User, base.Password = service, NATSLocalPasswords()[service]
	base.WaitForStreams = !natsauth.StreamManager(service)
	return base
}

// StartNATS starts an embedded NATS server with JetStream enabled.
func StartNATS(opts NATSOptions) (*server.Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("localinfra: NATS needs a store directory")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	sopts := &server.Options{
		ServerName: "parley-local",
		Host:       opts.Host,
		Port:       opts.Port,
		JetStream:  true,
		StoreDir:   opts.Dir,
		NoSigs:     true,
		NoLog:      !opts.Debug,
		SyncAlways: opts.SyncAlways,
		MaxPayload: 8 << 20,
	}
	if opts.Passwords != nil {
		users, err := natsauth.ServerUsers(opts.Passwords)
		if err != nil {
			return nil, fmt.Errorf("localinfra: nats: %w", err)
		}
		sopts.Users, sopts.NoAuthUser = users, opts.AnonymousAs
	}
	s, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("localinfra: nats: %w", err)
	}
	if opts.Debug {
		s.ConfigureLogger()
	}
	s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, errors.New("localinfra: nats did not become ready")
	}
	return s, nil
}
