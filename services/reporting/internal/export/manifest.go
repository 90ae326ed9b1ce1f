package export

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Manifest proves what a file holds.
type Manifest struct {
	TenantID string `json:"tenant_id"`
	ExportID string `json:"export_id"`
	// Request is the CreateExportRequest (source, filter, report kind...).
	Request json.RawMessage `json:"request"`
	// AppliedSequence is the event log sequence the projection had applied
	// when the export read it.
	AppliedSequence uint64    `json:"applied_sequence"`
	RowCount        uint64    `json:"row_count"`
	SHA256          string    `json:"sha256"`
	SizeBytes       uint64    `json:"size_bytes"`
	Columns         []string  `json:"columns"`
	Format          Format    `json:"format"`
	CreatedAt       time.Time `json:"created_at"`
}

// Verify checks that r holds exactly the bytes the manifest describes.
func (m *Manifest) Verify(r io.Reader) error {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return err
	}
	if uint64(n) != m.SizeBytes {
		return fmt.Errorf("export: file is %d bytes, manifest says %d", n, m.SizeBytes)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.SHA256 {
		return fmt.Errorf("export: file SHA-256 %s, manifest says %s", got, m.SHA256)
	}
	return nil
}
