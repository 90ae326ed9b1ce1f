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
	"net/textproto"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest/internal/api"
	"github.com/parley-dev/parley/services/ingest/internal/enrich"
	"github.com/parley-dev/parley/services/ingest/internal/rasa"
	"github.com/rs/cors"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// Config configures the HTTP edge.
type Config struct {
	// GRPCTarget is ingest's own gRPC address (dialled over loopback).
	GRPCTarget string
	// CORSOrigins are the browser origins allowed to call (widgets); "*"
	// allows any. Empty: no cross-origin access.
	CORSOrigins []string
	// TrustProxy takes the visitor's IP from X-Forwarded-For / X-Real-IP.
	// Enable it only behind a proxy that sets those headers.
	TrustProxy bool
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64
	Log          *slog.Logger
	// TracerProvider and Propagator instrument incoming requests.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
}

// Server is the HTTP edge.
type Server struct {
	cfg     Config
	conn    *grpc.ClientConn
	client  ingestv1.IngestServiceClient
	handler http.Handler
}

// New builds the HTTP edge. Close releases its gRPC connection.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	var otelOpts []otelgrpc.Option
	if cfg.TracerProvider != nil {
		otelOpts = append(otelOpts, otelgrpc.WithTracerProvider(cfg.TracerProvider))
	}
	if cfg.Propagator != nil {
		otelOpts = append(otelOpts, otelgrpc.WithPropagators(cfg.Propagator))
	}
	conn, err := grpc.NewClient(cfg.GRPCTarget, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOpts...)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(int(cfg.MaxBodyBytes)+1<<20)))
	if err != nil {
		return nil, fmt.Errorf("httpapi: dial %s: %w", cfg.GRPCTarget, err)
	}
	s := &Server{cfg: cfg, conn: conn, client: ingestv1.NewIngestServiceClient(conn)}
	gw := runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(headerMatcher),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithMetadata(s.visitorMetadata),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
	)
	if err := ingestv1.RegisterIngestServiceHandlerClient(ctx, gw, s.client); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("httpapi: register gateway: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", gw)
	mux.HandleFunc("POST /v1/rasa/events", s.rasaEvents)
	var h http.Handler = mux
	h = limitBody(h, cfg.MaxBodyBytes)
	if len(cfg.CORSOrigins) > 0 {
		h = cors.New(cors.Options{
			AllowedOrigins: cfg.CORSOrigins,
			AllowedMethods: []string{http.MethodPost, http.MethodOptions},
			AllowedHeaders: []string{"Authorization", "X-Api-Key", "Content-Type", "Traceparent"},
			MaxAge:         600,
		}).Handler(h)
	}
	opts := []otelhttp.Option{otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path })}
	if cfg.TracerProvider != nil {
		opts = append(opts, otelhttp.WithTracerProvider(cfg.TracerProvider))
	}
	if cfg.Propagator != nil {
		opts = append(opts, otelhttp.WithPropagators(cfg.Propagator))
	}
	s.handler = otelhttp.NewHandler(h, "ingest-http", opts...)
	return s, nil
}

// ServeHTTP serves the edge.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close releases the loopback gRPC connection.
func (s *Server) Close() error { return s.conn.Close() }

// headerMatcher forwards only the API key header (Authorization is
// forwarded by the gateway itself; the trace context travels through the
// instrumented loopback connection). Arbitrary
// Grpc-Metadata-* headers are not passed through: a browser must not be
// able to set the visitor metadata the edge itself derives.
func headerMatcher(key string) (string, bool) {
	switch textproto.CanonicalMIMEHeaderKey(key) {
	case "X-Api-Key":
		return "x-api-key", true
	}
	return "", false
}

// visitorMetadata passes the visitor's IP and user agent to the gRPC server
// for requests made by a browser (they carry an Origin header): then the
// caller is the visitor. Server-to-server requests add nothing.
func (s *Server) visitorMetadata(_ context.Context, r *http.Request) metadata.MD {
	if r.Header.Get("Origin") == "" {
		return nil
	}
	md := metadata.MD{}
	if ip, ok := enrich.ClientIP(r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Real-Ip"), r.RemoteAddr, s.cfg.TrustProxy); ok {
		md.Set(api.MDClientIP, ip.String())
	}
	if ua := r.UserAgent(); ua != "" {
		md.Set(api.MDClientUserAgent, ua)
	}
	return md
}

func limitBody(next http.Handler, n int64) http.Handler {
	if n <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > n {
			writeStatus(w, status.New(codes.InvalidArgument, fmt.Sprintf("request body: %d bytes; at most %d", r.ContentLength, n)))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		next.ServeHTTP(w, r)
	})
}

// rasaResponse is the body of a successful Rasa endpoint call.
type rasaResponse struct {
	Results []json.RawMessage `json:"results"`
	Skipped []rasaSkip        `json:"skipped"`
}

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
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeStatus(w, status.New(codes.InvalidArgument, fmt.Sprintf("request body: more than %d bytes", tooBig.Limit)))
			return
		}
		writeStatus(w, status.New(codes.InvalidArgument, "request body: "+err.Error()))
		return
	}
	opts := rasa.Options{BotID: r.URL.Query().Get("bot_id")}
	if ch := r.URL.Query().Get("channel"); ch != "" {
		v, ok := eventv1.Channel_value["CHANNEL_"+strings.ToUpper(ch)]
		if !ok || v == 0 {
			writeStatus(w, status.New(codes.InvalidArgument, fmt.Sprintf("channel: unknown channel %q", ch)))
			return
		}
		opts.Channel = eventv1.Channel(v)
	}
	res, err := rasa.Map(opts, body)
	if err != nil {
		var fe *rasa.FieldError
		if errors.As(err, &fe) {
			writeStatus(w, status.New(codes.InvalidArgument, fe.Error()))
			return
		}
		writeStatus(w, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	out := rasaResponse{Results: []json.RawMessage{}, Skipped: []rasaSkip{}}
	for _, sk := range res.Skipped {
		out.Skipped = append(out.Skipped, rasaSkip{Index: sk.Index, Event: sk.Event, Reason: sk.Reason})
	}
	if len(res.Events) > 0 {
		ctx := metadata.NewOutgoingContext(r.Context(), forwardAuth(r))
		resp, err := s.client.Append(ctx, &ingestv1.AppendRequest{Events: res.Events})
		if err != nil {
			writeStatus(w, status.Convert(err))
			return
		}
		for _, er := range resp.Results {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(er)
			if err != nil {
				writeStatus(w, status.New(codes.Internal, err.Error()))
				return
			}
			out.Results = append(out.Results, b)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// forwardAuth copies the caller's credentials and trace context to the
// loopback gRPC call.
func forwardAuth(r *http.Request) metadata.MD {
	md := metadata.MD{}
	if v := r.Header.Get("Authorization"); v != "" {
		md.Set("authorization", v)
	}
	if v := r.Header.Get("X-Api-Key"); v != "" {
		md.Set("x-api-key", v)
	}
	return md
}

// writeStatus answers with the HTTP status for st's code and the status as
// JSON, the same shape grpc-gateway uses: {"code", "message", "details"}.
func writeStatus(w http.ResponseWriter, st *status.Status) {
	b, err := protojson.Marshal(st.Proto())
	if err != nil {
		b = []byte(`{"code":13,"message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	_, _ = w.Write(b)
}
