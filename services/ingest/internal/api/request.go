package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/netip"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/services/ingest/internal/enrich"
	"google.golang.org/grpc/metadata"
)

// Metadata keys through which the HTTP edge tells the gRPC server what it saw
// of a browser (a widget's request, recognised by its Origin header): the
// visitor's IP and user agent, and its signature of both. Ingest uses them to
// enrich ConversationStarted.
//
// The server believes them only when the signature verifies (the edge runs in
// the same process and signs with a key generated at start that never leaves
// it) or when the caller's API key is one of Deps.ClientIPKeys (a trusted
// server relaying for visitors). A gRPC caller setting them itself is
// otherwise ignored. Server-to-server callers may instead put the visitor's
// IP and user agent into Visitor.
const (
	MDClientIP        = "parley-client-ip"
	MDClientUserAgent = "parley-client-user-agent"
	MDClientSig       = "parley-client-sig"
)

// EdgeSigner signs the visitor metadata of the in-process HTTP edge.
type EdgeSigner struct{ key []byte }

// NewEdgeSigner returns a signer with a fresh random key.
func NewEdgeSigner() EdgeSigner {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails
	return EdgeSigner{key: k}
}

// Sign returns the signature of what the edge saw.
func (e EdgeSigner) Sign(ip, userAgent string) string {
	m := hmac.New(sha256.New, e.key)
	m.Write([]byte("parley-edge/v1\x00" + ip + "\x00" + userAgent))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (e EdgeSigner) verify(ip, userAgent, sig string) bool {
	return len(e.key) > 0 && sig != "" && hmac.Equal([]byte(e.Sign(ip, userAgent)), []byte(sig))
}

// requestInfo reads what the edge saw of the visitor, if it may be believed.
func (s *Server) requestInfo(ctx context.Context, p grpcx.Principal) enrich.Request {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return enrich.Request{}
	}
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	ipText, ua := first(MDClientIP), first(MDClientUserAgent)
	if ipText == "" && ua == "" {
		return enrich.Request{}
	}
	if !s.d.Edge.verify(ipText, ua, first(MDClientSig)) && !s.d.ClientIPKeys[p.KeyID] {
		return enrich.Request{}
	}
	r := enrich.Request{UserAgent: ua}
	if ip, err := netip.ParseAddr(ipText); err == nil {
		r.IP = ip
	}
	return r
}
