package grpcx

import (
	"context"
	"net/netip"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// PeerAddress returns the caller's IP address, or "" outside a gRPC call.
// A call from loopback is one of Parley's own HTTP gateways forwarding an
// HTTP request: then it is the last X-Forwarded-For entry, the one the
// gateway appended from the HTTP connection (earlier entries are the
// client's word and are ignored).
func PeerAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	ip := ap.Addr().Unmap()
	if ip.IsLoopback() {
		md, _ := metadata.FromIncomingContext(ctx)
		if xff := md.Get("x-forwarded-for"); len(xff) > 0 {
			parts := strings.Split(xff[len(xff)-1], ",")
			if fwd, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
				return fwd.Unmap().String()
			}
		}
	}
	return ip.String()
}
