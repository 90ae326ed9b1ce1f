package export

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"slices"
	"testing"

	"github.com/xuri/excelize/v2"
)

func TestCSVNeutralisesFormulasAndWritesBOM(t *testing.T) {
	var b bytes.Buffer
	w, err := NewWriter(CSV, &b, []string{"a", "b"}, WriterOptions{BOM: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][]string{{"=1+1", "+31"}, {"-2", "@SUM(A1)"}, {"plain", "a=b"}} {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b.Bytes(), []byte{0xEF, 0xBB, 0xBF}) {
		t.Fatal("no BOM")
	}
	rows, err := csv.NewReader(bytes.NewReader(b.Bytes()[3:])).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"a", "b"}, {"'=1+1", "'+31"}, {"'-2", "'@SUM(A1)"}, {"plain", "a=b"}}
	if !slices.EqualFunc(rows, want, slices.Equal) {
		t.Fatalf("rows %v", rows)
	}
}

func TestXLSXStartsANewSheetAtTheRowLimit(t *testing.T) {
	var b bytes.Buffer
	w, err := NewWriter(XLSX, &b, []string{"n", "f"}, WriterOptions{SheetRows: 4})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := w.Write([]string{fmt.Sprint(i), "=HYPERLINK()"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := excelize.OpenReader(&b)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// 4 rows a sheet, header included: 3 + 3 + 1 data rows.
	var got []string
	sheets := f.GetSheetList()
	for _, s := range sheets {
		rows, err := f.GetRows(s)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rows[0], []string{"n", "f"}) || len(rows) > 4 {
			t.Fatalf("sheet %s: %v", s, rows)
		}
		for _, r := range rows[1:] {
			if r[1] != "'=HYPERLINK()" {
				t.Fatalf("formula kept: %v", r)
			}
			got = append(got, r[0])
		}
	}
	if len(sheets) != 3 || !slices.Equal(got, []string{"0", "1", "2", "3", "4", "5", "6"}) {
		t.Fatalf("sheets %v rows %v", sheets, got)
	}
	if v, _ := f.GetCellFormula(sheets[0], "B2"); v != "" {
		t.Fatalf("formula %q", v)
	}
}
