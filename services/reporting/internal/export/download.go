package export

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/share"
	"gocloud.dev/blob"
)

// DownloadPath is the HTTP path prefix of download links.
const DownloadPath = "/v1/export-files/"

// Downloads serves signed download links: the token alone grants one
// job's file of one tenant until it expires; nothing else is reachable.
type Downloads struct {
	Store  *Store
	Bucket *blob.Bucket
	Signer *share.Signer
	Log    *slog.Logger
	Now    func() time.Time
}

// ServeHTTP streams the file (or its manifest) a token grants.
func (d *Downloads) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	g, err := d.Signer.Verify(r.PathValue("token"), d.Now())
	if errors.Is(err, share.ErrExpired) {
		http.Error(w, "download link expired", http.StatusGone)
		return
	}
	if err != nil || (g.Conversation != linkFile && g.Conversation != linkManifest) {
		http.Error(w, "invalid download link", http.StatusForbidden)
		return
	}
	// The job is looked up under the token's tenant: a token only ever
	// reaches its own tenant's job.
	j, err := d.Store.Get(r.Context(), g.Tenant, g.LinkID)
	if errors.Is(err, ErrNotFound) || (err == nil && (j.State != Succeeded || j.Manifest == nil)) {
		http.Error(w, "no such file (expired or never finished)", http.StatusNotFound)
		return
	}
	if err != nil {
		d.Log.ErrorContext(r.Context(), "export download: store", "err", err)
		http.Error(w, "export store unavailable; retry later", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Cache-Control", "private, no-store")
	if g.Conversation == linkManifest {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(j.Manifest)
		return
	}
	rd, err := d.Bucket.NewReader(r.Context(), j.BlobKey, nil)
	if isNotFound(err) {
		http.Error(w, "no such file (expired)", http.StatusNotFound)
		return
	}
	if err != nil {
		d.Log.ErrorContext(r.Context(), "export download: bucket", "err", err)
		http.Error(w, "export storage unavailable; retry later", http.StatusServiceUnavailable)
		return
	}
	defer rd.Close()
	w.Header().Set("Content-Type", j.Manifest.Format.ContentType())
	w.Header().Set("Content-Length", strconv.FormatInt(rd.Size(), 10))
	w.Header().Set("Content-Disposition", `attachment; filename="export-`+j.ExportID+"."+string(j.Manifest.Format)+`"`)
	w.Header().Set("X-Parley-Sha256", j.Manifest.SHA256)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, rd); err != nil {
		d.Log.WarnContext(r.Context(), "export download interrupted", "export", j.ExportID, "err", err)
	}
}
