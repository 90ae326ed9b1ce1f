// Package natsauth is the one source of truth for how Parley's services
// authenticate to NATS and what each may do there: per-service users with
// publish/subscribe allow lists (rendered into the NATS server configuration
// in deploy/ and applied to the local and test servers), and the client
// options (credentials, TLS, inbox prefix) built from config.NATS.
package natsauth

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
)

// Names the permissions refer to. The durable consumer names mirror the
// services' (which libs cannot import); the tests run the library code
// against a server with these permissions, so a rename fails there.
const (
	convStream    = eventbus.ConvStream
	dlqStream     = eventbus.DLQStream
	convPrefix    = eventbus.ConvSubjectPrefix + "."
	convSubjects  = convPrefix + ">"
	dlqPrefix     = eventbus.DLQSubjectPrefix + "."
	endedStream   = "KV_" + convview.Bucket
	endedSubjects = "$KV." + convview.Bucket + ".>"
	jsAPI         = "$JS.API."
	streamManager = "ingest"
	allConsumers  = "*"
	inboxRoot     = "_INBOX"
)

// Operator is the platform user with every permission, for people and tools
// (nats CLI, parleyctl verify); no service runs as it.
const Operator = "parley-operator"

// Services are the NATS users, one per service.
func Services() []string {
	return []string{"ingest", "lifecycle", "tagging", "reporting", "notification"}
}

// Permissions are a user's allow lists (everything else is denied) and the
// subjects denied although an allow pattern covers them.
type Permissions struct {
	Publish     []string
	PublishDeny []string
	Subscribe   []string
}

// InboxPrefix is the reply-subject prefix of a service's connection, so that
// no service can read another's replies.
func InboxPrefix(service string) string { return inboxRoot + "." + service }

// StreamManager reports whether service creates and updates the streams
// PARLEY_CONV and PARLEY_DLQ (PARLEY_NATS_MANAGE_STREAMS); the others only
// read their configuration.
func StreamManager(service string) bool { return service == streamManager }

// Read-only tables. Event kinds only Parley's own services append (docs/events.md,
// "Producers"): the subject's last token is the kind, so each producer may
// publish its own kinds only, and ingest none of these.
var (
	lifecycleKinds = []string{"conversation_ended", "engagement_classified", "operator_no_response", "late_event_recorded",
		// for its API calls (take over, hand back)
		"handoff_requested", "agent_joined", "agent_left"}
	taggingKinds = []string{"tag_applied", "tag_removed", "issue_detected", "label_added", "label_removed", "flagged", "unflagged"}
	// serverOnlyKinds are refused from ingest.
	serverOnlyKinds = append(append([]string{}, lifecycleKinds[:4]...), taggingKinds...)
)

// Kinds lists the event kinds a service may append; nil means any kind
// (ingest, less ServerOnlyKinds).
func Kinds(service string) []string {
	switch service {
	case "lifecycle":
		return slices.Clone(lifecycleKinds)
	case "tagging":
		return slices.Clone(taggingKinds)
	}
	return nil
}

// ServerOnlyKinds are the kinds ingest may not append.
func ServerOnlyKinds() []string { return slices.Clone(serverOnlyKinds) }

func kindSubjects(kinds []string) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = convPrefix + "*.*." + k
	}
	return out
}

// durable is the durable consumer each consuming service owns on PARLEY_CONV.
var durable = map[string]string{
	"lifecycle": "lifecycle",
	"tagging":   "tagging",
	"reporting": "reporting-projector",
}

// For returns the permissions of a service's user.
func For(service string) (Permissions, error) {
	if !slices.Contains(Services(), service) {
		return Permissions{}, fmt.Errorf("natsauth: unknown service %q", service)
	}
	var deny []string
	pub := []string{
		jsAPI + "INFO",
		jsAPI + "STREAM.INFO." + convStream,
		jsAPI + "STREAM.INFO." + dlqStream,
	}
	if StreamManager(service) {
		pub = append(pub, streamAdmin(convStream)...)
		pub = append(pub, streamAdmin(dlqStream)...)
	}
	switch service {
	case "ingest":
		// Appends any client event; refuses events for ended conversations
		// by watching the ended-conversations bucket (creating it when
		// lifecycle has not yet) and by reading a conversation's close.
		pub = append(pub, convSubjects, jsAPI+"STREAM.MSG.GET."+convStream, jsAPI+"DIRECT.GET."+convStream+".>")
		pub = append(pub, streamAdmin(endedStream)...)
		pub = append(pub, orderedReader(endedStream)...)
		deny = append(deny, kindSubjects(serverOnlyKinds)...)
	case "lifecycle":
		// Ends conversations (events and the ended-conversations bucket);
		// reads its partitions with ordered consumers (libs/partition).
		pub = append(pub, kindSubjects(lifecycleKinds)...)
		pub = append(pub, endedSubjects, jsAPI+"STREAM.MSG.GET."+convStream, jsAPI+"DIRECT.GET."+convStream+".>")
		pub = append(pub, streamAdmin(endedStream)...)
		pub = append(pub, orderedReader(convStream)...)
	case "tagging":
		// Publishes tags and issues; backfill replays with ordered consumers.
		pub = append(pub, kindSubjects(taggingKinds)...)
		pub = append(pub, jsAPI+"STREAM.MSG.GET."+convStream, jsAPI+"DIRECT.GET."+convStream+".>")
		pub = append(pub, orderedReader(convStream)...)
	case "reporting":
		// Publishes nothing to the log; rebuilds replay with ordered
		// consumers.
		pub = append(pub, orderedReader(convStream)...)
	case "notification":
		// Publishes nothing to the log; reads its partitions and replays
		// with ordered consumers, dead-letters to its own DLQ subject.
		pub = append(pub, orderedReader(convStream)...)
		pub = append(pub, dlqPrefix+"notification")
	}
	own, consumes := durable[service]
	if consumes {
		pub = append(pub, durableConsumer(convStream, own)...)
		pub = append(pub, dlqPrefix+own)
	}
	// Ordered consumers have generated names, so their permissions use
	// wildcards; other services' durable consumers stay out of reach.
	if service == "tagging" || service == "reporting" || service == "lifecycle" || service == "notification" {
		for _, s := range Services() {
			if d, ok := durable[s]; ok && d != own {
				deny = append(deny, durableConsumer(convStream, d)...)
			}
		}
	}
	return Permissions{Publish: dedupe(pub), PublishDeny: deny, Subscribe: []string{InboxPrefix(service) + ".>"}}, nil
}

func streamAdmin(stream string) []string {
	return []string{jsAPI + "STREAM.INFO." + stream, jsAPI + "STREAM.CREATE." + stream, jsAPI + "STREAM.UPDATE." + stream}
}

// durableConsumer is what a durable pull consumer needs: create or look it
// up, fetch, acknowledge (and reset it: lifecycle replays from the start
// when its state is empty).
func durableConsumer(stream, name string) []string {
	return []string{
		jsAPI + "CONSUMER.CREATE." + stream + "." + name,
		jsAPI + "CONSUMER.CREATE." + stream + "." + name + ".>",
		jsAPI + "CONSUMER.DURABLE.CREATE." + stream + "." + name,
		jsAPI + "CONSUMER.INFO." + stream + "." + name,
		jsAPI + "CONSUMER.DELETE." + stream + "." + name,
		jsAPI + "CONSUMER.MSG.NEXT." + stream + "." + name,
		"$JS.ACK." + stream + "." + name + ".>",
	}
}

// orderedReader is what ordered consumers (replays, watches) need: they are
// ephemeral with generated names, pull or push to the connection's inbox,
// and answer flow control.
func orderedReader(stream string) []string {
	return []string{
		jsAPI + "CONSUMER.CREATE." + stream + "." + allConsumers,
		jsAPI + "CONSUMER.CREATE." + stream + "." + allConsumers + ".>",
		jsAPI + "CONSUMER.INFO." + stream + "." + allConsumers,
		jsAPI + "CONSUMER.DELETE." + stream + "." + allConsumers,
		jsAPI + "CONSUMER.MSG.NEXT." + stream + "." + allConsumers,
		"$JS.FC." + stream + ".>",
	}
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// PasswordVar is the environment variable the NATS server configuration
// reads a user's password from (deploy/kustomize/base/nats/auth.conf).
func PasswordVar(user string) string {
	return "PARLEY_NATS_PASSWORD_" + strings.ToUpper(strings.NewReplacer("-", "_").Replace(user))
}

// ServerConfig renders the NATS server `authorization` block: one user per
// service with its permissions, and the operator, with passwords read from
// environment variables (PasswordVar) when the server starts.
func ServerConfig() string {
	var b strings.Builder
	b.WriteString("# Generated by libs/natsauth (go test ./libs/natsauth -run TestDeployConfig -update); do not edit.\n")
	b.WriteString("# Passwords come from the NATS server's environment (Secret parley-nats-users).\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, s := range Services() {
		p, _ := For(s)
		fmt.Fprintf(&b, "    {\n      user: %q\n      password: $%s\n      permissions: {\n", s, PasswordVar(s))
		if len(p.PublishDeny) > 0 {
			fmt.Fprintf(&b, "        publish: {\n          allow: %s\n          deny: %s\n        }\n", list(p.Publish, 10), list(p.PublishDeny, 10))
		} else {
			fmt.Fprintf(&b, "        publish: { allow: %s }\n", list(p.Publish, 10))
		}
		fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", list(p.Subscribe, 10))
		b.WriteString("      }\n    }\n")
	}
	fmt.Fprintf(&b, "    { user: %q, password: $%s }\n", Operator, PasswordVar(Operator))
	b.WriteString("  ]\n}\n")
	return b.String()
}

func list(items []string, indent int) string {
	pad := strings.Repeat(" ", indent)
	var b strings.Builder
	b.WriteString("[\n")
	for _, it := range items {
		fmt.Fprintf(&b, "%s  %q\n", pad, it)
	}
	b.WriteString(pad + "]")
	return b.String()
}

// ClientOptions are the NATS connection options of a service: its inbox
// prefix, credentials (user and password, a .creds file or an nkey seed
// file) and TLS, from cfg.
func ClientOptions(service string, cfg config.NATS) ([]nats.Option, error) {
	opts := []nats.Option{nats.CustomInboxPrefix(InboxPrefix(service))}
	n := 0
	if cfg.User != "" || cfg.Password != "" {
		n++
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.CredsFile != "" {
		n++
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeySeedFile != "" {
		n++
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("natsauth: PARLEY_NATS_NKEY_SEED_FILE: %w", err)
		}
		opts = append(opts, o)
	}
	if n > 1 {
		return nil, errors.New("natsauth: set one of PARLEY_NATS_USER/PASSWORD, PARLEY_NATS_CREDS and PARLEY_NATS_NKEY_SEED_FILE")
	}
	tc, err := TLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// TLSConfig is the client TLS configuration from cfg: nil unless a TLS file
// is named.
func TLSConfig(cfg config.NATS) (*tls.Config, error) {
	if cfg.TLSCAFile == "" && cfg.TLSCertFile == "" && cfg.TLSKeyFile == "" {
		return nil, nil
	}
	tc, err := config.ClientTLS(cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile, "PARLEY_NATS_TLS")
	if err != nil {
		return nil, fmt.Errorf("natsauth: %w", err)
	}
	return tc, nil
}
