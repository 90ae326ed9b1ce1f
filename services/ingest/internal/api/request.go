package api

import (
	"context"
	"net/netip"

	"github.com/parley-dev/parley/services/ingest/internal/enrich"
	"google.golang.org/grpc/metadata"
)

// Metadata keys through which the HTTP edge tells the gRPC server what it saw
// of a browser (a widget's request, recognised by its Origin header): the
// visitor's IP and user agent. Ingest uses them to enrich ConversationStarted.
// Server-to-server callers do not set them; their own address says nothing
// about the visitor (they may put the visitor's IP and user agent into
// Visitor instead).
const (
	MDClientIP        = "parley-client-ip"
	MDClientUserAgent = "parley-client-user-agent"
)

// requestInfo reads what the edge saw of the visitor.
func requestInfo(ctx context.Context) enrich.Request {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return enrich.Request{}
	}
	var r enrich.Request
	if v := md.Get(MDClientIP); len(v) > 0 {
		if ip, err := netip.ParseAddr(v[0]); err == nil {
			r.IP = ip
		}
	}
	if v := md.Get(MDClientUserAgent); len(v) > 0 {
		r.UserAgent = v[0]
	}
	return r
}
