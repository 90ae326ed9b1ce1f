package reporting_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/parley-dev/parley/libs/testsvc"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting"
	"github.com/parley-dev/parley/services/reporting/internal/export"
	"github.com/parley-dev/parley/services/reporting/internal/filter"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"github.com/parley-dev/parley/services/reporting/internal/share"
	"github.com/parquet-go/parquet-go"
	"github.com/xuri/excelize/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const exportSecret = "export-secret-for-tests-0123456789abcdef"

// fakeS3 starts an in-process S3-protocol server with one bucket and
// returns its bucket URL.
func fakeS3(t *testing.T) string {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("exports"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	return "s3://exports?endpoint=" + srv.URL + "&region=us-east-1&use_path_style=true&disable_https=true"
}

func exportClient(t *testing.T, f *fixture) reportingv1.ExportServiceClient {
	return reportingv1.NewExportServiceClient(testsvc.Dial(t, f.cfg.GRPCAddr))
}

// runExport creates an export and waits until it is finished.
func runExport(t *testing.T, f *fixture, c reportingv1.ExportServiceClient, req *reportingv1.CreateExportRequest) *reportingv1.Export {
	t.Helper()
	e, err := c.CreateExport(f.ctx(), req)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		e, err = c.GetExport(f.ctx(), &reportingv1.GetExportRequest{ExportId: e.ExportId})
		if err != nil {
			t.Fatal(err)
		}
		switch e.State {
		case reportingv1.ExportState_EXPORT_STATE_SUCCEEDED:
			return e
		case reportingv1.ExportState_EXPORT_STATE_FAILED, reportingv1.ExportState_EXPORT_STATE_CANCELLED:
			t.Fatalf("export %v", e)
		}
		if time.Now().After(deadline) {
			t.Fatalf("export not done: %v", e)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// download fetches a signed link without an API key and checks the file
// against its manifest.
func download(t *testing.T, e *reportingv1.Export) []byte {
	t.Helper()
	resp, err := http.Get(e.DownloadUrl)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("download: %d %s", resp.StatusCode, body)
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != e.Manifest.Sha256 || uint64(len(body)) != e.Manifest.SizeBytes {
		t.Fatalf("file does not match its manifest %v", e.Manifest)
	}
	return body
}

// readBack reads a file of any format back with its library into a table:
// the header, then the rows.
func readBack(t *testing.T, format reportingv1.ExportFormat, body []byte) [][]string {
	t.Helper()
	switch format {
	case reportingv1.ExportFormat_EXPORT_FORMAT_CSV:
		rows, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(body, []byte("\uFEFF")))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return rows
	case reportingv1.ExportFormat_EXPORT_FORMAT_XLSX:
		x, err := excelize.OpenReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		var out [][]string
		for i, sheet := range x.GetSheetList() {
			rows, err := x.GetRows(sheet)
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 {
				rows = rows[1:] // each sheet repeats the header
			}
			for _, r := range rows {
				out = append(out, padded(r, len(rows[0])))
			}
		}
		if len(out) > 0 {
			for i := range out {
				out[i] = padded(out[i], len(out[0]))
			}
		}
		return out
	case reportingv1.ExportFormat_EXPORT_FORMAT_PARQUET:
		r := parquet.NewReader(bytes.NewReader(body))
		defer r.Close()
		order, _ := r.File().Lookup(export.ColumnsKey)
		cols := strings.Split(order, ",")
		fields := r.Schema().Fields()
		out := [][]string{cols}
		buf := make([]parquet.Row, 64)
		for {
			n, err := r.ReadRows(buf)
			for _, row := range buf[:n] {
				vals := make([]string, len(cols))
				for _, v := range row {
					name := fields[v.Column()].Name()
					vals[slices.Index(cols, name)] = v.String()
				}
				out = append(out, vals)
			}
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Fatalf("format %v", format)
	return nil
}

func padded(r []string, n int) []string {
	for len(r) < n {
		r = append(r, "")
	}
	return r
}

var formats = []reportingv1.ExportFormat{reportingv1.ExportFormat_EXPORT_FORMAT_CSV, reportingv1.ExportFormat_EXPORT_FORMAT_XLSX, reportingv1.ExportFormat_EXPORT_FORMAT_PARQUET}

func TestExportsHoldTheRowsListAndReportReturn(t *testing.T) {
	bucket := fakeS3(t)
	f := startWith(t, func(c *reporting.Config) {
		c.Export = reporting.ExportConfig{BucketURL: bucket, Secret: exportSecret, Retention: time.Hour, LinkTTL: time.Minute, Heartbeat: 50 * time.Millisecond}
	})
	c := exportClient(t, f)
	fl := allTime(&reportingv1.Filter{BotIds: []string{"shop"}})
	ids, _ := f.list(t, fl, 7)
	// The model's own answer: shop bots are the even conversations.
	if want := expect(f.acme, func(c conv) bool { return c.bot == "shop" }); !slices.Equal(ids, want) {
		t.Fatalf("list %v, model %v", ids, want)
	}
	last, err := f.bus.LastSequence(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range formats {
		t.Run("conversations "+format.String(), func(t *testing.T) {
			e := runExport(t, f, c, &reportingv1.CreateExportRequest{Source: reportingv1.ExportSource_EXPORT_SOURCE_CONVERSATIONS, Format: format,
				Filter: fl, Columns: []string{"conversation_id", "bot_id", "tags", "cost_micros"}, CsvBom: true})
			table := readBack(t, format, download(t, e))
			if !slices.Equal(table[0], []string{"conversation_id", "bot_id", "tags", "cost_micros"}) {
				t.Fatalf("header %v", table[0])
			}
			var got []string
			for _, r := range table[1:] {
				got = append(got, r[0])
				m := f.acme[slices.IndexFunc(f.acme, func(c conv) bool { return c.id == r[0] })]
				if r[1] != "shop" || r[3] != fmt.Sprint(m.cost) || (r[2] != "") != m.tag {
					t.Fatalf("row %v, model %+v", r, m)
				}
			}
			if !slices.Equal(got, ids) || e.Manifest.RowCount != uint64(len(ids)) || e.RowsWritten != uint64(len(ids)) {
				t.Fatalf("rows %v, list %v, manifest %v", got, ids, e.Manifest)
			}
			if e.Manifest.AppliedSequence < last || e.Manifest.TenantId != "acme" || !strings.Contains(e.Manifest.RequestJson, "shop") {
				t.Fatalf("manifest %v (log at %d)", e.Manifest, last)
			}
		})
		for _, kind := range []string{"billing", "sessions_with_markers", "client_phrases"} {
			t.Run(kind+" "+format.String(), func(t *testing.T) {
				rep, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: kind, Filter: allTime(&reportingv1.Filter{}), WithMessageTimes: true})
				if err != nil {
					t.Fatal(err)
				}
				e := runExport(t, f, c, &reportingv1.CreateExportRequest{Source: reportingv1.ExportSource_EXPORT_SOURCE_REPORT, ReportKind: kind,
					Format: format, Filter: allTime(&reportingv1.Filter{}), WithMessageTimes: true})
				table := readBack(t, format, download(t, e))
				want := [][]string{rep.Columns}
				for _, r := range rep.Rows {
					vals := slices.Clone(r.Values)
					for i, v := range vals {
						vals[i] = export.Neutralise(v)
					}
					want = append(want, vals)
				}
				if len(want) < 2 || !slices.EqualFunc(table, want, slices.Equal) {
					t.Fatalf("file\n%v\nreport\n%v", table, want)
				}
			})
		}
	}
	t.Run("synchronous CSV", func(t *testing.T) {
		rep, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: "sessions_with_markers", Filter: allTime(&reportingv1.Filter{})})
		if err != nil {
			t.Fatal(err)
		}
		post := func(accept, key string) (int, string, []byte) {
			req, _ := http.NewRequest("POST", f.httpURL+"/v1/reports/sessions_with_markers", strings.NewReader(`{"filter":{"time_range":{"preset":"all_time"}}}`))
			req.Header.Set("Accept", accept)
			if key != "" {
				req.Header.Set("X-Api-Key", key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Header.Get("Content-Type"), body
		}
		code, ctype, body := post("text/csv", f.key)
		if code != 200 || !strings.HasPrefix(ctype, "text/csv") {
			t.Fatalf("csv: %d %s %s", code, ctype, body)
		}
		want := [][]string{rep.Columns}
		for _, r := range rep.Rows {
			want = append(want, r.Values)
		}
		if got := readBack(t, reportingv1.ExportFormat_EXPORT_FORMAT_CSV, body); len(want) < 2 || !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("csv\n%v\nreport\n%v", got, want)
		}
		if code, _, _ := post("text/csv", ""); code != http.StatusUnauthorized {
			t.Fatalf("csv without key: %d", code)
		}
		if code, ctype, _ := post("application/json", f.key); code != 200 || !strings.HasPrefix(ctype, "application/json") {
			t.Fatalf("json: %d %s", code, ctype)
		}
	})
	t.Run("links", func(t *testing.T) {
		e := runExport(t, f, c, &reportingv1.CreateExportRequest{Source: reportingv1.ExportSource_EXPORT_SOURCE_TRANSCRIPTS,
			Format: reportingv1.ExportFormat_EXPORT_FORMAT_CSV, Filter: allTime(&reportingv1.Filter{})})
		msgs := 0
		for _, m := range f.acme {
			msgs += m.messages()
		}
		if rows := readBack(t, reportingv1.ExportFormat_EXPORT_FORMAT_CSV, download(t, e)); len(rows)-1 != msgs {
			t.Fatalf("transcript rows %d, model %d", len(rows)-1, msgs)
		}
		globex := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", f.globexKey)
		if _, err := c.GetExport(globex, &reportingv1.GetExportRequest{ExportId: e.ExportId}); status.Code(err) != codes.NotFound {
			t.Fatalf("another tenant's export: %v", err)
		}
		signer, err := share.NewSigner([]byte(exportSecret))
		if err != nil {
			t.Fatal(err)
		}
		get := func(tok string) int {
			resp, err := http.Get(f.httpURL + export.DownloadPath + tok)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		// A link for the same export under another tenant finds nothing; an
		// expired one is refused; a tampered one too.
		other := signer.Sign(share.Grant{Tenant: "globex", Conversation: "file", LinkID: e.ExportId, Expires: time.Now().Add(time.Hour)})
		expired := signer.Sign(share.Grant{Tenant: "acme", Conversation: "file", LinkID: e.ExportId, Expires: time.Now().Add(-time.Second)})
		good := signer.Sign(share.Grant{Tenant: "acme", Conversation: "file", LinkID: e.ExportId, Expires: time.Now().Add(time.Hour)})
		if code := get(other); code != http.StatusNotFound {
			t.Fatalf("other tenant's link: %d", code)
		}
		if code := get(expired); code != http.StatusGone {
			t.Fatalf("expired link: %d", code)
		}
		if code := get(good + "x"); code != http.StatusForbidden {
			t.Fatalf("tampered link: %d", code)
		}
		if code := get(good); code != http.StatusOK {
			t.Fatalf("good link: %d", code)
		}
		// Bad input names the field and creates nothing.
		_, err = c.CreateExport(f.ctx(), &reportingv1.CreateExportRequest{Source: reportingv1.ExportSource_EXPORT_SOURCE_CONVERSATIONS,
			Format: reportingv1.ExportFormat_EXPORT_FORMAT_CSV, Columns: []string{"conversation_id", "password"}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "columns") {
			t.Fatalf("bad column: %v", err)
		}
	})
}

// slowSource reads rows slowly and counts them; transcripts wait a minute
// for their first row (a slow query) unless cancelled, counted in aborted.
type slowSource struct {
	next    export.Source
	delay   time.Duration
	rows    *atomic.Int64
	aborted *atomic.Int64
}

func (s slowSource) Stream(ctx context.Context, kind string, w *filter.Where, o query.ReportOptions, row func([]string) error) error {
	if kind == query.ExportTranscripts {
		select {
		case <-ctx.Done():
			s.aborted.Add(1)
			return ctx.Err()
		case <-time.After(time.Minute):
		}
	}
	return s.next.Stream(ctx, kind, w, o, func(r []string) error {
		s.rows.Add(1)
		time.Sleep(s.delay)
		return row(r)
	})
}

func TestCancelStopsAnExport(t *testing.T) {
	dir := t.TempDir()
	var read, aborted atomic.Int64
	f := startWith(t, func(c *reporting.Config) {
		c.Export = reporting.ExportConfig{Dir: dir, Heartbeat: 20 * time.Millisecond, Retention: time.Hour,
			WrapSource: func(s export.Source) export.Source {
				return slowSource{next: s, delay: 50 * time.Millisecond, rows: &read, aborted: &aborted}
			}}
	})
	c := exportClient(t, f)
	e, err := c.CreateExport(f.ctx(), &reportingv1.CreateExportRequest{Source: reportingv1.ExportSource_EXPORT_SOURCE_CONVERSATIONS,
		Format: reportingv1.ExportFormat_EXPORT_FORMAT_XLSX, Filter: allTime(&reportingv1.Filter{})})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := c.GetExport(f.ctx(), &reportingv1.GetExportRequest{ExportId: e.ExportId})
		if err != nil {
			t.Fatal(err)
		}
		if got.State == reportingv1.ExportState_EXPORT_STATE_RUNNING && got.RowsWritten > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("export never ran: %v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e, err = c.CancelExport(f.ctx(), &reportingv1.CancelExportRequest{ExportId: e.ExportId})
	if err != nil || e.State != reportingv1.ExportState_EXPORT_STATE_CANCELLED {
		t.Fatalf("cancel: %v %v", e, err)
	}
	at := read.Load()
	time.Sleep(time.Second)
	// The job stopped reading within a heartbeat or two (60 rows take 3s).
	if n := read.Load(); n > at+3 || n >= 60 {
		t.Fatalf("still reading after cancel: %d then %d", at, n)
	}
	e, _ = c.GetExport(f.ctx(), &reportingv1.GetExportRequest{ExportId: e.ExportId})
	if e.State != reportingv1.ExportState_EXPORT_STATE_CANCELLED || e.DownloadUrl != "" {
		t.Fatalf("after cancel: %v", e)
	}
	// A job whose query has not answered yet is stopped too (heartbeats do
	// not wait for rows).
	e, err = c.CreateExport(f.ctx(), &reportingv1.CreateExportRequest{Source: reportingv1.ExportSource_EXPORT_SOURCE_TRANSCRIPTS,
		Format: reportingv1.ExportFormat_EXPORT_FORMAT_CSV, Filter: allTime(&reportingv1.Filter{})})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got, err := c.GetExport(f.ctx(), &reportingv1.GetExportRequest{ExportId: e.ExportId})
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("transcripts export never ran: %v %v", got, err)
		}
		if got.State == reportingv1.ExportState_EXPORT_STATE_RUNNING {
			break
		}
	}
	if _, err := c.CancelExport(f.ctx(), &reportingv1.CancelExportRequest{ExportId: e.ExportId}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); aborted.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a job waiting for its query was not stopped by the cancel")
		}
	}
	// No file was left behind.
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			t.Errorf("file left: %s", p)
		}
		return nil
	})
}
