package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// exportManifest is the part of an export's manifest verify checks.
type exportManifest struct {
	ExportID  string `json:"export_id"`
	SHA256    string `json:"sha256"`
	SizeBytes uint64 `json:"size_bytes"`
	RowCount  uint64 `json:"row_count"`
}

// exports is the "exports" command group: background exports of the
// reporting service (read scope), their files and manifests.
func (a *app) exports() *cobra.Command {
	var addr, apiKey string
	cmd := &cobra.Command{
		Use:   "exports",
		Short: "Exports: CSV, XLSX and Parquet files of conversations, transcripts and reports, with manifests",
		Long:  "Talks to the reporting service's gRPC API with an API key of one tenant holding the read scope (docs/exports.md).",
	}
	def := os.Getenv("PARLEY_REPORTING_ADDR")
	if def == "" {
		def = "localhost:7104"
	}
	cmd.PersistentFlags().StringVar(&addr, "addr", def, "reporting gRPC address (env PARLEY_REPORTING_ADDR)")
	cmd.PersistentFlags().StringVar(&apiKey, "api-key", os.Getenv("PARLEY_API_KEY"), "API key with the read scope (env PARLEY_API_KEY)")
	call := func(cmd *cobra.Command, timeout time.Duration, f func(context.Context, reportingv1.ExportServiceClient) error) error {
		if apiKey == "" {
			return errors.New("no API key: pass --api-key or set PARLEY_API_KEY")
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
		if err := f(ctx, reportingv1.NewExportServiceClient(conn)); err != nil {
			if st, ok := status.FromError(err); ok {
				return fmt.Errorf("reporting at %s: %s: %s", addr, st.Code(), st.Message())
			}
			return err
		}
		return nil
	}
	show := func(cmd *cobra.Command, e *reportingv1.Export) error {
		out, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), string(out))
		return err
	}

	var source, kind, format, filterJSON, columns, tz string
	var bom, wait bool
	create := &cobra.Command{
		Use:   "create --source conversations|transcripts|report [--kind K] --format csv|xlsx|parquet",
		Short: "Queue an export (--wait: until it is done)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &reportingv1.CreateExportRequest{ReportKind: kind, TimeZone: tz, CsvBom: bom, WithMessageTimes: true,
				Source: reportingv1.ExportSource(reportingv1.ExportSource_value["EXPORT_SOURCE_"+strings.ToUpper(source)]),
				Format: reportingv1.ExportFormat(reportingv1.ExportFormat_value["EXPORT_FORMAT_"+strings.ToUpper(format)])}
			if columns != "" {
				req.Columns = strings.Split(columns, ",")
			}
			if filterJSON != "" {
				req.Filter = &reportingv1.Filter{}
				if err := protojson.Unmarshal([]byte(filterJSON), req.Filter); err != nil {
					return fmt.Errorf("--filter: %w", err)
				}
			}
			return call(cmd, time.Hour, func(ctx context.Context, c reportingv1.ExportServiceClient) error {
				e, err := c.CreateExport(ctx, req)
				for err == nil && wait && (e.State == reportingv1.ExportState_EXPORT_STATE_QUEUED || e.State == reportingv1.ExportState_EXPORT_STATE_RUNNING) {
					time.Sleep(500 * time.Millisecond)
					e, err = c.GetExport(ctx, &reportingv1.GetExportRequest{ExportId: e.ExportId})
				}
				if err != nil {
					return err
				}
				return show(cmd, e)
			})
		},
	}
	create.Flags().StringVar(&source, "source", "conversations", "conversations, transcripts or report")
	create.Flags().StringVar(&kind, "kind", "", "report kind (with --source report), as RunReport's")
	create.Flags().StringVar(&format, "format", "csv", "csv, xlsx or parquet")
	create.Flags().StringVar(&filterJSON, "filter", "", `filter as JSON, e.g. '{"time_range":{"preset":"last_7_days"}}'`)
	create.Flags().StringVar(&columns, "columns", "", "columns to keep, comma separated (default: all)")
	create.Flags().StringVar(&tz, "time-zone", "", "IANA time zone of the file's times")
	create.Flags().BoolVar(&bom, "bom", false, "CSV: start with a UTF-8 byte order mark (Excel)")
	create.Flags().BoolVar(&wait, "wait", false, "wait until the export is done")

	get := &cobra.Command{
		Use: "get EXPORT_ID", Short: "Show an export, its progress, manifest and download link", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd, time.Minute, func(ctx context.Context, c reportingv1.ExportServiceClient) error {
				e, err := c.GetExport(ctx, &reportingv1.GetExportRequest{ExportId: args[0]})
				if err != nil {
					return err
				}
				return show(cmd, e)
			})
		},
	}
	cancel := &cobra.Command{
		Use: "cancel EXPORT_ID", Short: "Stop a queued or running export", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd, time.Minute, func(ctx context.Context, c reportingv1.ExportServiceClient) error {
				e, err := c.CancelExport(ctx, &reportingv1.CancelExportRequest{ExportId: args[0]})
				if err != nil {
					return err
				}
				return show(cmd, e)
			})
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List the tenant's exports, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(cmd, time.Minute, func(ctx context.Context, c reportingv1.ExportServiceClient) error {
				res, err := c.ListExports(ctx, &reportingv1.ListExportsRequest{PageSize: 200})
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "EXPORT\tSTATE\tSOURCE\tFORMAT\tROWS\tCREATED\n")
				for _, e := range res.GetExports() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", e.GetExportId(), strings.TrimPrefix(e.GetState().String(), "EXPORT_STATE_"),
						strings.TrimPrefix(e.GetRequest().GetSource().String(), "EXPORT_SOURCE_"), strings.TrimPrefix(e.GetRequest().GetFormat().String(), "EXPORT_FORMAT_"),
						e.GetRowsWritten(), e.GetCreatedAt().AsTime().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	var output string
	download := &cobra.Command{
		Use: "download EXPORT_ID -o FILE", Short: "Download a finished export and its manifest (FILE.manifest.json), verified", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd, time.Hour, func(ctx context.Context, c reportingv1.ExportServiceClient) error {
				e, err := c.GetExport(ctx, &reportingv1.GetExportRequest{ExportId: args[0]})
				if err != nil {
					return err
				}
				if e.GetDownloadUrl() == "" {
					return fmt.Errorf("export %s is %s: no file", args[0], e.GetState())
				}
				if err := fetch(ctx, e.GetManifestUrl(), output+".manifest.json"); err != nil {
					return err
				}
				if err := fetch(ctx, e.GetDownloadUrl(), output); err != nil {
					return err
				}
				m, err := verifyExport(output, output+".manifest.json")
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d rows, %d bytes, sha256 %s (verified)\n", output, m.RowCount, m.SizeBytes, m.SHA256)
				return nil
			})
		},
	}
	download.Flags().StringVarP(&output, "output", "o", "", "file to write (required)")
	_ = download.MarkFlagRequired("output")
	var manifest string
	verify := &cobra.Command{
		Use: "verify FILE [--manifest FILE.manifest.json]", Short: "Check a file against its manifest (size and SHA-256)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if manifest == "" {
				manifest = args[0] + ".manifest.json"
			}
			m, err := verifyExport(args[0], manifest)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s matches export %s: %d rows, %d bytes\n", args[0], m.ExportID, m.RowCount, m.SizeBytes)
			return nil
		},
	}
	verify.Flags().StringVar(&manifest, "manifest", "", "manifest JSON (default FILE.manifest.json)")
	cmd.AddCommand(create, get, list, cancel, download, verify)
	return cmd
}

// fetch streams url into path.
func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("download: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// verifyExport checks file against the manifest at manifestPath.
func verifyExport(file, manifestPath string) (*exportManifest, error) {
	raw, err := os.ReadFile(manifestPath)
	if err != nil {
		return nil, err
	}
	m := &exportManifest{}
	if err := json.Unmarshal(raw, m); err != nil || m.SHA256 == "" {
		return nil, fmt.Errorf("%s: not an export manifest", manifestPath)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, err
	}
	if uint64(n) != m.SizeBytes {
		return nil, fmt.Errorf("%s is %d bytes, the manifest says %d: incomplete or altered", file, n, m.SizeBytes)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.SHA256 {
		return nil, fmt.Errorf("%s has SHA-256 %s, the manifest says %s: altered", file, got, m.SHA256)
	}
	return m, nil
}
