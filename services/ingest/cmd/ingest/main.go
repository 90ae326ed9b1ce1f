// Command ingest runs Parley's ingest service. Configuration comes from the
// environment (see README.md, "Configuration").
package main

import (
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/services/ingest"
)

func main() { service.Main(ingest.Run) }
