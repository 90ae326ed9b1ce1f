package export

import (
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/parley-dev/parley/libs/httpgw"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// SyncCSV answers POST /v1/reports/{kind} with CSV when the caller asks
// for text/csv (scripts): the report as RunReport returns it (its limit,
// at most 100,000 rows, bounds it), formulas neutralised. Other requests go
// to Next (the JSON gateway).
type SyncCSV struct {
	Client reportingv1.ReportingServiceClient
	Next   http.Handler
}

// wantsCSV tells whether an Accept header asks for CSV.
func wantsCSV(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		if t, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && t == "text/csv" {
			return true
		}
	}
	return false
}

func (s *SyncCSV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !wantsCSV(r.Header.Get("Accept")) {
		s.Next.ServeHTTP(w, r)
		return
	}
	req := &reportingv1.RunReportRequest{}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		httpgw.WriteStatus(w, status.New(codes.InvalidArgument, "request body could not be read"))
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := protojson.Unmarshal(body, req); err != nil {
			httpgw.WriteStatus(w, status.New(codes.InvalidArgument, "request body is not a RunReportRequest in JSON"))
			return
		}
	}
	req.Kind = r.PathValue("kind")
	ctx := metadata.NewOutgoingContext(r.Context(), httpgw.ForwardAuth(r))
	rep, err := s.Client.RunReport(ctx, req)
	if err != nil {
		httpgw.WriteStatus(w, status.Convert(err))
		return
	}
	w.Header().Set("Content-Type", CSV.ContentType())
	if rep.GetTruncated() {
		w.Header().Set("X-Parley-Truncated", "true")
	}
	cw, err := NewWriter(CSV, w, rep.GetColumns(), WriterOptions{})
	if err != nil {
		return
	}
	for _, row := range rep.GetRows() {
		if err := cw.Write(row.GetValues()); err != nil {
			return
		}
	}
	_ = cw.Close()
}
