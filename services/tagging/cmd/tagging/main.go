// Command tagging runs Parley's tagging service. Configuration comes from the
// environment (see README.md, "Configuration").
package main

import (
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/services/tagging"
)

func main() { service.Main(tagging.Run) }
