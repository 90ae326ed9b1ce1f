package stack

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// tokenSecret returns ingest's conversation-token secret: PARLEY_INGEST_TOKEN_SECRET
// when set, else the one saved in Dir/ingest-token-secret, generated on the
// first run (so widget tokens stay valid across runs).
func (s *Stack) tokenSecret() (string, error) {
	return s.secret("PARLEY_INGEST_TOKEN_SECRET", "ingest-token-secret")
}

// piiSecret returns the key of ingest's keyed display names and hash
// masking (PARLEY_INGEST_PII_SECRET), kept like tokenSecret so names stay
// the same across runs.
func (s *Stack) piiSecret() (string, error) {
	return s.secret("PARLEY_INGEST_PII_SECRET", "ingest-pii-secret")
}

// secret returns env when set, else the secret saved in Dir/file,
// generated on the first run.
func (s *Stack) secret(env, file string) (string, error) {
	if v := os.Getenv(env); v != "" {
		return v, nil
	}
	path := filepath.Join(s.Dir, file)
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("stack: read %s: %w", path, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("stack: write %s: %w", path, err)
	}
	return secret, nil
}
