package proto_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates the Go code into a temp dir with the
// pinned tools (make tools) and fails when the committed code differs: run
// `make proto` and commit the result.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	bin, err := filepath.Abs("../.bin")
	if err != nil {
		t.Fatal(err)
	}
	buf := filepath.Join(bin, "buf")
	if _, err := os.Stat(buf); err != nil {
		t.Fatalf("buf is not built: run `make tools` (%v)", err)
	}
	out := t.TempDir()
	cmd := exec.Command(buf, "generate", "-o", out)
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf generate: %v\n%s", err, b)
	}
	generated := goFiles(t, out)
	committed := goFiles(t, ".")
	for name, want := range generated {
		got, ok := committed[name]
		if !ok {
			t.Errorf("%s is not committed: run make proto", name)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run make proto", name)
		}
	}
	for name := range committed {
		if _, ok := generated[name]; !ok {
			t.Errorf("%s has no .proto source any more: delete it", name)
		}
	}
}

func goFiles(t *testing.T, root string) map[string][]byte {
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".pb.go") || strings.HasSuffix(path, ".pb.gw.go")) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		files[rel] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
