// Command reporting runs Parley's reporting service. Configuration comes from the
// environment (see README.md, "Configuration").
package main

import (
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/services/reporting"
)

func main() { service.Main(reporting.Run) }
