package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

type conversationKey struct{}

type conversationIDs struct{ tenant, conversation string }

// WithConversation returns a context whose log lines carry the tenant and
// conversation ids.
func WithConversation(ctx context.Context, tenantID, conversationID string) context.Context {
	return context.WithValue(ctx, conversationKey{}, conversationIDs{tenantID, conversationID})
}

// ConversationFrom returns the ids stored by WithConversation.
func ConversationFrom(ctx context.Context) (tenantID, conversationID string) {
	ids, _ := ctx.Value(conversationKey{}).(conversationIDs)
	return ids.tenant, ids.conversation
}

// LogHandler adds trace_id, span_id, tenant_id and conversation_id from the
// record's context to every log record.
type LogHandler struct{ next slog.Handler }

// NewLogHandler wraps next.
func NewLogHandler(next slog.Handler) *LogHandler { return &LogHandler{next: next} }

// Enabled reports whether next handles the level.
func (h *LogHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle adds the context ids and passes the record on.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	if tenant, conv := ConversationFrom(ctx); tenant != "" || conv != "" {
		if tenant != "" {
			r.AddAttrs(slog.String("tenant_id", tenant))
		}
		if conv != "" {
			r.AddAttrs(slog.String("conversation_id", conv))
		}
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a handler with extra attributes.
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &LogHandler{next: h.next.WithAttrs(attrs)}
}

// WithGroup returns a handler that nests attributes under name.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	return &LogHandler{next: h.next.WithGroup(name)}
}
