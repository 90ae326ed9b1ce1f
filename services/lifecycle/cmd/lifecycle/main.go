// Command lifecycle runs Parley's lifecycle service. Configuration comes from the
// environment (see README.md, "Configuration").
package main

import (
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/services/lifecycle"
)

func main() { service.Main(lifecycle.Run) }
