package api

import (
	"context"
	"errors"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/sharelinks"
	"google.golang.org/grpc/status"
)

// ListShareLinks lists the tenant's share links, newest first.
func (s *Server) ListShareLinks(ctx context.Context, req *reportingv1.ListShareLinksRequest) (*reportingv1.ListShareLinksResponse, error) {
	p, err := s.shareLinksCaller(ctx)
	if err != nil {
		return nil, err
	}
	if c := req.GetConversationId(); c != "" && !eventbus.ValidConversationID(c) {
		return nil, grpcx.Invalid("conversation_id", "1-128 characters of A-Z a-z 0-9 _ -")
	}
	size, after, err := page(req.GetPageSize(), DefaultPageSize, MaxPageSize, req.GetPageToken(), sharelinks.DecodeCursor)
	if err != nil {
		return nil, err
	}
	links, next, err := s.d.Links.List(ctx, p.TenantID, req.GetConversationId(), size, after)
	if err != nil {
		return nil, s.linksUnavailable(ctx, err)
	}
	out := &reportingv1.ListShareLinksResponse{}
	for _, l := range links {
		out.Links = append(out.Links, linkProto(l))
	}
	if next != nil {
		out.NextPageToken = next.Encode()
	}
	return out, nil
}

// RevokeShareLink revokes one of the tenant's share links.
func (s *Server) RevokeShareLink(ctx context.Context, req *reportingv1.RevokeShareLinkRequest) (*reportingv1.ShareLink, error) {
	p, err := s.shareLinksCaller(ctx)
	if err != nil {
		return nil, err
	}
	id := req.GetLinkId()
	if id == "" || len(id) > 64 {
		return nil, grpcx.Invalid("link_id", "required; the id of a share link (ListShareLinks, share_link_id)")
	}
	l, err := s.d.Links.Revoke(ctx, p.TenantID, id, s.d.Now())
	if errors.Is(err, sharelinks.ErrNotFound) {
		return nil, grpcx.NotFound("share link %q not found", id)
	}
	if err != nil {
		return nil, s.linksUnavailable(ctx, err)
	}
	s.d.Log.InfoContext(ctx, "share link revoked", "tenant_id", p.TenantID, "link_id", id, "key_id", p.KeyID)
	return linkProto(l), nil
}

func (s *Server) shareLinksCaller(ctx context.Context) (grpcx.Principal, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return p, err
	}
	if s.d.Links == nil {
		return p, grpcx.FailedPrecondition("SHARE_LINKS_DISABLED", "share_links", "share links are not enabled")
	}
	return p, nil
}

func (s *Server) linksUnavailable(ctx context.Context, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	s.d.Log.ErrorContext(ctx, "share links query failed", "err", err)
	return grpcx.Unavailable("share links store unavailable; retry later")
}

func linkProto(l sharelinks.Link) *reportingv1.ShareLink {
	return &reportingv1.ShareLink{
		LinkId: l.ID, ConversationId: l.ConversationID, CreatedByKeyId: l.CreatedByKeyID,
		CreatedAt: ts(l.CreatedAt), ExpiresAt: ts(l.ExpiresAt), RevokedAt: ts(l.RevokedAt),
	}
}
