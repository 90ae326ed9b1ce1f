// Command asyncapi writes docs/asyncapi.yaml, the AsyncAPI document of
// Parley's event stream, from the proto descriptors (tools/asyncapi).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/parley-dev/parley/tools/asyncapi"
)

func main() {
	out := flag.String("o", "docs/asyncapi.yaml", "file to write")
	flag.Parse()
	b, err := asyncapi.Generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "asyncapi:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "asyncapi:", err)
		os.Exit(1)
	}
}
