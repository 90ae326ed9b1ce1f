// Package httpapi is ingest's HTTP/JSON edge: grpc-gateway routes for web
// widgets and server-to-server callers (proto/http.yaml), the Rasa event
// broker endpoint, CORS for widget origins and a request size limit. Every
// call is forwarded to ingest's own gRPC API, so authentication, scopes,
// validation, rate limits and the event log behave exactly as over gRPC.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/httpgw"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest/internal/api"
	"github.com/parley-dev/parley/services/ingest/internal/enrich"
	"github.com/parley-dev/parley/services/ingest/internal/rasa"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// Config configures the HTTP edge.
type Config struct {
	// GRPCAddr is ingest's own gRPC listen address (dialled over loopback).
	GRPCAddr string
	// CORSOrigins are the browser origins allowed to call (widgets); "*"
	// allows any. Empty: no cross-origin access.
	CORSOrigins []string
	// TrustedProxies are the proxies in front of ingest whose
	// X-Forwarded-For hops are believed (see enrich.ClientIP). Empty: the
	// visitor's IP is the TCP peer.
	TrustedProxies []netip.Prefix
	// Signer signs the visitor metadata passed to the gRPC server.
	Signer api.EdgeSigner
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64
	// Auth authenticates the Rasa endpoint's caller before its body is read
	// (the generated routes are authenticated by the gRPC server).
	Auth grpcx.Authenticator
	Log  *slog.Logger
	// TracerProvider and Propagator instrument incoming requests.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
}

// Server is the HTTP edge.
type Server struct {
	cfg     Config
	gw      *httpgw.Gateway
	client  ingestv1.IngestServiceClient
	handler http.Handler
}

// New builds the HTTP edge. Close releases its gRPC connection.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg}
	gw, err := httpgw.New(httpgw.Config{
		Name: "ingest-http", GRPCAddr: cfg.GRPCAddr, CORSOrigins: cfg.CORSOrigins, MaxBodyBytes: cfg.MaxBodyBytes,
		CORSHeaders: []string{HeaderConversationToken},
		Metadata:    s.visitorMetadata, TracerProvider: cfg.TracerProvider, Propagator: cfg.Propagator,
	})
	if err != nil {
		return nil, err
	}
	s.gw, s.client = gw, ingestv1.NewIngestServiceClient(gw.Conn)
	if err := ingestv1.RegisterIngestServiceHandlerClient(ctx, gw.GW, s.client); err != nil {
		_ = gw.Close()
		return nil, fmt.Errorf("httpapi: register gateway: %w", err)
	}
	gw.Mux.HandleFunc("POST /v1/rasa/events", s.rasaEvents)
	s.handler = gw.Handler()
	return s, nil
}

// ServeHTTP serves the edge. It resolves the visitor's IP first (trusted
// proxy hops only), then hides it from what follows but the visitor
// metadata: spans record the peer and forwarding headers, so they see the
// network (/24, /48) only.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip, ok := enrich.ClientIP(strings.Join(r.Header.Values("X-Forwarded-For"), ","), r.Header.Get("X-Real-Ip"), r.RemoteAddr, s.cfg.TrustedProxies)
	r = r.WithContext(context.WithValue(r.Context(), clientIPKey{}, clientIP{ip: ip, ok: ok}))
	r.Header.Del("X-Forwarded-For")
	r.Header.Del("X-Real-Ip")
	r.Header.Del("Forwarded")
	r.RemoteAddr = ""
	if ok {
		r.RemoteAddr = netip.AddrPortFrom(enrich.TruncateIP(ip), 0).String()
	}
	s.handler.ServeHTTP(w, r)
}

type clientIPKey struct{}

type clientIP struct {
	ip netip.Addr
	ok bool
}

// Close releases the loopback gRPC connection.
func (s *Server) Close() error { return s.gw.Close() }

// HeaderConversationToken carries a widget's conversation token (gRPC
// metadata parley-conversation-token).
const HeaderConversationToken = "Parley-Conversation-Token"

// visitorMetadata passes what the edge saw of a browser to the gRPC server:
// for requests made by a browser (they carry an Origin header) the origin
// (publishable keys are bound to origins), the visitor's IP and user agent.
// A widget's conversation token is passed on whatever the caller.
func (s *Server) visitorMetadata(_ context.Context, r *http.Request) metadata.MD {
	md := metadata.MD{}
	if v := r.Header.Get(HeaderConversationToken); v != "" {
		md.Set(api.MDConversationToken, v)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return md
	}
	md.Set(api.MDOrigin, origin)
	var ipText string
	if c, _ := r.Context().Value(clientIPKey{}).(clientIP); c.ok {
		ipText = c.ip.String()
		md.Set(api.MDClientIP, ipText)
	}
	ua := r.UserAgent()
	if ua != "" {
		md.Set(api.MDClientUserAgent, ua)
	}
	md.Set(api.MDClientSig, s.cfg.Signer.Sign(ipText, ua))
	return md
}

// rasaResponse is the body of a successful Rasa endpoint call.
type rasaResponse struct {
	Results []json.RawMessage `json:"results"`
	// Skipped lists the first MaxRasaSkipsListed skipped events;
	// SkippedTotal counts them all.
	Skipped      []rasaSkip `json:"skipped"`
	SkippedTotal int        `json:"skipped_total"`
}

// MaxRasaSkipsListed bounds the skipped events listed in a Rasa reply, so
// that the reply stays small whatever the request holds.
const MaxRasaSkipsListed = 20

type rasaSkip struct {
	Index  int    `json:"index"`
	Event  string `json:"event"`
	Reason string `json:"reason"`
}

// rasaEvents accepts what a Rasa event broker sends (one event, an array or
// NDJSON), maps it (internal/rasa) and appends it through Append. Query
// parameters: bot_id (set on conversation_started) and channel (e.g.
// "whatsapp"; default: derived from input_channel).
func (s *Server) rasaEvents(w http.ResponseWriter, r *http.Request) {
	// Authenticate before reading the body: a caller without a valid key
	// costs no parsing and gets no answer about its input.
	if st := s.authorizeRasa(r); st != nil {
		httpgw.WriteStatus(w, st)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpgw.WriteStatus(w, status.New(codes.InvalidArgument, fmt.Sprintf("request body: more than %d bytes", tooBig.Limit)))
			return
		}
		httpgw.WriteStatus(w, status.New(codes.InvalidArgument, "request body: "+err.Error()))
		return
	}
	opts := rasa.Options{BotID: r.URL.Query().Get("bot_id")}
	if ch := r.URL.Query().Get("channel"); ch != "" {
		v, ok := eventv1.Channel_value["CHANNEL_"+strings.ToUpper(ch)]
		if !ok || v == 0 {
			httpgw.WriteStatus(w, status.New(codes.InvalidArgument, fmt.Sprintf("channel: unknown channel %q", ch)))
			return
		}
		opts.Channel = eventv1.Channel(v)
	}
	res, err := rasa.Map(opts, body)
	if err != nil {
		var fe *rasa.FieldError
		if errors.As(err, &fe) {
			httpgw.WriteStatus(w, status.New(codes.InvalidArgument, fe.Error()))
			return
		}
		httpgw.WriteStatus(w, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	out := rasaResponse{Results: []json.RawMessage{}, Skipped: []rasaSkip{}, SkippedTotal: len(res.Skipped)}
	for _, sk := range res.Skipped[:min(len(res.Skipped), MaxRasaSkipsListed)] {
		out.Skipped = append(out.Skipped, rasaSkip{Index: sk.Index, Event: shorten(sk.Event, 64), Reason: sk.Reason})
	}
	if len(res.Events) > 0 {
		ctx := metadata.NewOutgoingContext(r.Context(), httpgw.ForwardAuth(r))
		resp, err := s.client.Append(ctx, &ingestv1.AppendRequest{Events: res.Events})
		if err != nil {
			httpgw.WriteStatus(w, status.Convert(err))
			return
		}
		for _, er := range resp.Results {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(er)
			if err != nil {
				s.cfg.Log.ErrorContext(r.Context(), "rasa endpoint: encoding a result", "err", err)
				httpgw.WriteStatus(w, status.New(codes.Internal, "cannot encode the results; the events are stored, resending is safe"))
				return
			}
			out.Results = append(out.Results, b)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// authorizeRasa authenticates the caller's API key the way the gRPC server
// does (nil when it may call Append). Publishable (widget) keys are refused:
// the Rasa endpoint is for servers.
func (s *Server) authorizeRasa(r *http.Request) *status.Status {
	key := grpcx.APIKeyFromMetadata(httpgw.ForwardAuth(r))
	if key == "" {
		return status.New(codes.Unauthenticated, "missing API key: send \"authorization: Bearer <key>\" or \"x-api-key: <key>\"")
	}
	if s.cfg.Auth == nil {
		return nil // the gRPC server authenticates the Append call
	}
	p, err := s.cfg.Auth.Authenticate(r.Context(), key)
	if errors.Is(err, grpcx.ErrInvalidKey) {
		return status.New(codes.Unauthenticated, "invalid or revoked API key")
	}
	if err != nil {
		s.cfg.Log.ErrorContext(r.Context(), "rasa endpoint: verifying an API key", "err", err)
		return status.New(codes.Unavailable, "cannot verify API key right now")
	}
	if !p.Has(grpcx.ScopeIngest) {
		return status.New(codes.PermissionDenied, "API key lacks the \"ingest\" scope")
	}
	if p.Publishable() {
		return status.New(codes.PermissionDenied, "publishable (widget) keys cannot use the Rasa endpoint; use a server key")
	}
	return nil
}

// shorten cuts s to at most n bytes of valid UTF-8.
func shorten(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}
