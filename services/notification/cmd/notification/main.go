// Command notification runs Parley's notification service. Configuration comes from the
// environment (see README.md, "Configuration").
package main

import (
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/services/notification"
)

func main() { service.Main(notification.Run) }
