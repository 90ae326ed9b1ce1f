// Package export writes conversations, transcripts and reports to CSV,
// XLSX and Parquet files in the background: jobs in PostgreSQL claimed by
// any replica, rows streamed from ClickHouse into blob storage, a manifest
// per file and signed, expiring download links.
package export
