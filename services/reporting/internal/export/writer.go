package export

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/parquet-go/parquet-go"
	"github.com/xuri/excelize/v2"
)

// Format is a file format.
type Format string

// Formats an export writes.
const (
	CSV     Format = "csv"
	XLSX    Format = "xlsx"
	Parquet Format = "parquet"
)

// ContentType is the format's media type.
func (f Format) ContentType() string {
	switch f {
	case XLSX:
		return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	case Parquet:
		return "application/vnd.apache.parquet"
	}
	return "text/csv; charset=utf-8"
}

// SheetRows is the most rows an XLSX sheet holds (its header included).
const SheetRows = 1048576

// Writer writes a table's rows to a file in one format.
type Writer interface {
	// Write adds one row (as many values as columns).
	Write(row []string) error
	// Close finishes the file (it does not close the underlying writer).
	Close() error
}

// WriterOptions tune a writer.
type WriterOptions struct {
	// BOM starts a CSV file with a UTF-8 byte order mark.
	BOM bool
	// SheetRows overrides SheetRows (tests).
	SheetRows int
}

// NewWriter returns a writer of format f to w whose first row is the
// header cols.
func NewWriter(f Format, w io.Writer, cols []string, o WriterOptions) (Writer, error) {
	switch f {
	case CSV:
		return newCSV(w, cols, o.BOM)
	case XLSX:
		n := o.SheetRows
		if n <= 0 {
			n = SheetRows
		}
		return newXLSX(w, cols, n)
	case Parquet:
		return newParquet(w, cols), nil
	}
	return nil, fmt.Errorf("export: unknown format %q", f)
}

// Neutralise defuses spreadsheet formula injection: a value starting with
// = + - or @ gets a leading apostrophe, so a spreadsheet shows it as text.
func Neutralise(v string) string {
	if v != "" && strings.ContainsRune("=+-@", rune(v[0])) {
		return "'" + v
	}
	return v
}

type csvWriter struct {
	buf *bufio.Writer
	w   *csv.Writer
	row []string
}

func newCSV(w io.Writer, cols []string, bom bool) (*csvWriter, error) {
	b := bufio.NewWriterSize(w, 64<<10)
	if bom {
		if _, err := b.WriteString("\uFEFF"); err != nil {
			return nil, err
		}
	}
	c := &csvWriter{buf: b, w: csv.NewWriter(b), row: make([]string, len(cols))}
	return c, c.Write(cols)
}

func (c *csvWriter) Write(row []string) error {
	for i, v := range row {
		c.row[i] = Neutralise(v)
	}
	return c.w.Write(c.row[:len(row)])
}

func (c *csvWriter) Close() error {
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return err
	}
	return c.buf.Flush()
}

// xlsxWriter streams rows into sheets through excelize's StreamWriter,
// which spills to temporary files: memory stays bounded.
type xlsxWriter struct {
	out       io.Writer
	f         *excelize.File
	sw        *excelize.StreamWriter
	cols      []string
	sheet     int
	row       int // the last row written on the current sheet
	sheetRows int
	cells     []any
}

func newXLSX(w io.Writer, cols []string, sheetRows int) (*xlsxWriter, error) {
	x := &xlsxWriter{out: w, f: excelize.NewFile(), cols: cols, sheetRows: sheetRows, cells: make([]any, len(cols))}
	if err := x.newSheet(); err != nil {
		_ = x.f.Close()
		return nil, err
	}
	return x, nil
}

func (x *xlsxWriter) newSheet() error {
	if x.sw != nil {
		if err := x.sw.Flush(); err != nil {
			return err
		}
	}
	x.sheet++
	name := fmt.Sprintf("Sheet%d", x.sheet)
	if x.sheet > 1 {
		if _, err := x.f.NewSheet(name); err != nil {
			return err
		}
	}
	sw, err := x.f.NewStreamWriter(name)
	if err != nil {
		return err
	}
	x.sw, x.row = sw, 0
	return x.put(x.cols, false)
}

func (x *xlsxWriter) put(row []string, neutralise bool) error {
	cells := x.cells[:len(row)]
	for i, v := range row {
		if neutralise {
			v = Neutralise(v)
		}
		cells[i] = v
	}
	x.row++
	cell, err := excelize.CoordinatesToCellName(1, x.row)
	if err != nil {
		return err
	}
	return x.sw.SetRow(cell, cells)
}

func (x *xlsxWriter) Write(row []string) error {
	if x.row >= x.sheetRows {
		if err := x.newSheet(); err != nil {
			return err
		}
	}
	return x.put(row, true)
}

func (x *xlsxWriter) Close() error {
	defer x.f.Close()
	if err := x.sw.Flush(); err != nil {
		return err
	}
	_, err := x.f.WriteTo(x.out)
	return err
}

// ColumnsKey is the Parquet key-value metadata naming the columns in the
// export's order (Parquet groups order their fields by name).
const ColumnsKey = "parley.columns"

type parquetWriter struct {
	w     *parquet.Writer
	index []int // index[i]: the Parquet column of the export's column i
	batch []parquet.Row
}

func newParquet(w io.Writer, cols []string) *parquetWriter {
	g := parquet.Group{}
	for _, c := range cols {
		g[c] = parquet.String()
	}
	schema := parquet.NewSchema("export", g)
	p := &parquetWriter{index: make([]int, len(cols))}
	for i, f := range schema.Fields() {
		for j, c := range cols {
			if c == f.Name() {
				p.index[j] = i
			}
		}
	}
	// Row groups of 64Ki rows keep the buffered part of the file small.
	p.w = parquet.NewWriter(w, schema, parquet.KeyValueMetadata(ColumnsKey, strings.Join(cols, ",")), parquet.MaxRowsPerRowGroup(1<<16))
	return p
}

func (p *parquetWriter) Write(row []string) error {
	if len(row) != len(p.index) {
		return errors.New("export: row width differs from the columns")
	}
	r := make(parquet.Row, len(row))
	for i, v := range row {
		c := p.index[i]
		r[c] = parquet.ByteArrayValue([]byte(v)).Level(0, 0, c)
	}
	p.batch = append(p.batch, r)
	if len(p.batch) >= 1024 {
		return p.flush()
	}
	return nil
}

func (p *parquetWriter) flush() error {
	_, err := p.w.WriteRows(p.batch)
	p.batch = p.batch[:0]
	return err
}

func (p *parquetWriter) Close() error {
	if err := p.flush(); err != nil {
		return err
	}
	return p.w.Close()
}
