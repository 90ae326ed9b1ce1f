// Package httpgw serves a service's HTTP/JSON API: grpc-gateway routes
// (proto/http.yaml) forwarded over a loopback connection to the service's own
// gRPC server, so authentication, scopes, validation and limits are exactly
// those of the gRPC call. It adds CORS for browser origins, a request body
// limit and OpenTelemetry instrumentation.
package httpgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/parley-dev/parley/libs/config"
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

// Config configures a gateway.
type Config struct {
	// Name names the HTTP server in traces, e.g. "ingest-http".
	Name string
	// GRPCAddr is the service's own gRPC listen address (":7101" is dialled
	// as 127.0.0.1:7101).
	GRPCAddr string
	// CORSOrigins are the browser origins allowed to call; "*" allows any.
	// Empty: no cross-origin access.
	CORSOrigins []string
	// MaxBodyBytes bounds a request body (0: no limit).
	MaxBodyBytes int64
	// Routes are the path templates of the routes ("/v1/shared/{share_token}";
	// a {name} stands for one path segment, and may be followed by a verb,
	// "{id}:close"). When set, spans are named and their url.path attribute
	// is set from the matching template instead of the raw path, so that
	// secrets in paths (share tokens) stay out of traces; unmatched paths
	// show as "/{unmatched}".
	Routes []string
	// CORSHeaders are request headers browsers may send besides
	// Authorization, X-Api-Key, Content-Type and Traceparent.
	CORSHeaders []string
	// Metadata adds gRPC metadata derived from the HTTP request (optional).
	Metadata       func(context.Context, *http.Request) metadata.MD
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
}

// Gateway is an HTTP/JSON front for one service.
type Gateway struct {
	// Conn is the loopback connection to the service's gRPC server.
	Conn *grpc.ClientConn
	// GW serves the generated routes; register handlers on it.
	GW *runtime.ServeMux
	// Mux routes /v1/ to GW; add hand-written endpoints to it.
	Mux *http.ServeMux
	cfg Config
}

// New dials the service and builds the gateway mux. Register the generated
// handlers on GW (e.g. RegisterXServiceHandler(ctx, g.GW, g.Conn)), add any
// extra endpoints to Mux, then serve Handler().
func New(cfg Config) (*Gateway, error) {
	var otelOpts []otelgrpc.Option
	if cfg.TracerProvider != nil {
		otelOpts = append(otelOpts, otelgrpc.WithTracerProvider(cfg.TracerProvider))
	}
	if cfg.Propagator != nil {
		otelOpts = append(otelOpts, otelgrpc.WithPropagators(cfg.Propagator))
	}
	conn, err := grpc.NewClient(Loopback(cfg.GRPCAddr), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOpts...)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(int(max(cfg.MaxBodyBytes, 4<<20))+1<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("httpgw: dial %s: %w", cfg.GRPCAddr, err)
	}
	opts := []runtime.ServeMuxOption{
		runtime.WithIncomingHeaderMatcher(headerMatcher),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{},
		}),
	}
	if cfg.Metadata != nil {
		opts = append(opts, runtime.WithMetadata(cfg.Metadata))
	}
	g := &Gateway{Conn: conn, GW: runtime.NewServeMux(opts...), Mux: http.NewServeMux(), cfg: cfg}
	g.Mux.Handle("/v1/", g.GW)
	return g, nil
}

// Handler is the complete HTTP handler: body limit, CORS, tracing.
func (g *Gateway) Handler() http.Handler {
	var h http.Handler = g.Mux
	h = limitBody(h, g.cfg.MaxBodyBytes)
	if len(g.cfg.CORSOrigins) > 0 {
		h = cors.New(cors.Options{
			AllowedOrigins: g.cfg.CORSOrigins,
			AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodOptions},
			AllowedHeaders: append([]string{"Authorization", "X-Api-Key", "Content-Type", "Traceparent"}, g.cfg.CORSHeaders...),
			MaxAge:         600,
		}).Handler(h)
	}
	opts := []otelhttp.Option{otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path })}
	if g.cfg.TracerProvider != nil {
		opts = append(opts, otelhttp.WithTracerProvider(g.cfg.TracerProvider))
	}
	if g.cfg.Propagator != nil {
		opts = append(opts, otelhttp.WithPropagators(g.cfg.Propagator))
	}
	if len(g.cfg.Routes) == 0 {
		return otelhttp.NewHandler(h, g.cfg.Name, opts...)
	}
	// otelhttp sees the route template as the path; the handler inside gets
	// the real URL back.
	traced := otelhttp.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, ok := r.Context().Value(realURLKey{}).(*url.URL); ok {
			r2 := *r
			r2.URL = u
			r = &r2
		}
		h.ServeHTTP(w, r)
	}), g.cfg.Name, opts...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		shown := *r.URL
		shown.Path, shown.RawPath, shown.RawQuery = Template(g.cfg.Routes, r.URL.Path), "", ""
		r2 := r.WithContext(context.WithValue(r.Context(), realURLKey{}, r.URL))
		r2.URL = &shown
		r2.RequestURI = shown.Path
		traced.ServeHTTP(w, r2)
	})
}

type realURLKey struct{}

// Template returns the route template among routes that path matches, or
// "/{unmatched}".
func Template(routes []string, path string) string {
	segs := strings.Split(path, "/")
	for _, rt := range routes {
		want := strings.Split(rt, "/")
		if len(want) != len(segs) {
			continue
		}
		ok := true
		for i, w := range want {
			if !segmentMatches(w, segs[i]) {
				ok = false
				break
			}
		}
		if ok {
			return rt
		}
	}
	return "/{unmatched}"
}

func segmentMatches(want, got string) bool {
	if !strings.HasPrefix(want, "{") {
		return want == got
	}
	end := strings.Index(want, "}")
	if end < 0 {
		return false
	}
	verb := want[end+1:]
	return len(got) > len(verb) && strings.HasSuffix(got, verb)
}

// Close releases the loopback connection.
func (g *Gateway) Close() error { return g.Conn.Close() }

// headerMatcher forwards only the API key header (the gateway forwards
// Authorization itself; the trace context travels through the instrumented
// loopback connection). Arbitrary Grpc-Metadata-* headers are not passed
// through, so a browser cannot set metadata the edge derives itself.
func headerMatcher(key string) (string, bool) {
	if textproto.CanonicalMIMEHeaderKey(key) == "X-Api-Key" {
		return "x-api-key", true
	}
	return "", false
}

func limitBody(next http.Handler, n int64) http.Handler {
	if n <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > n {
			WriteStatus(w, status.New(codes.InvalidArgument, fmt.Sprintf("request body: %d bytes; at most %d", r.ContentLength, n)))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		next.ServeHTTP(w, r)
	})
}

// WriteStatus answers with the HTTP status for st's code and the status as
// JSON, the shape grpc-gateway uses: {"code", "message", "details"}.
func WriteStatus(w http.ResponseWriter, st *status.Status) {
	b, err := protojson.Marshal(st.Proto())
	if err != nil {
		b = []byte(`{"code":13,"message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	_, _ = w.Write(b)
}

// ForwardAuth copies the caller's credentials to outgoing gRPC metadata, for
// hand-written endpoints that call the service over Conn.
func ForwardAuth(r *http.Request) metadata.MD {
	md := metadata.MD{}
	if v := r.Header.Get("Authorization"); v != "" {
		md.Set("authorization", v)
	}
	if v := r.Header.Get("X-Api-Key"); v != "" {
		md.Set("x-api-key", v)
	}
	return md
}

// Serve serves h on addr until ctx ends, then shuts down gracefully. limits
// bound the server's timeouts and header size (defaults for zero values).
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger, limits config.HTTP) error {
	srv := limits.NewServer(h)
	srv.Addr = addr
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("httpgw: listen %s: %w", addr, err)
	}
	if log != nil {
		log.Info("http api listening", "http_addr", addr)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

// Loopback turns a listen address (":7101") into a dial target.
func Loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
