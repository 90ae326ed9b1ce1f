package service

import (
	"fmt"
	"os"
	"strings"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/telemetry"
)

// Config is the header every service's configuration embeds: the settings
// all services share (PARLEY_LOG_LEVEL, PARLEY_NATS_*, PARLEY_POSTGRES_*,
// PARLEY_HTTP_*, PARLEY_GRPC_*, ...) and the service's listen addresses.
type Config struct {
	Server   config.Server
	NATS     config.NATS
	Postgres config.Postgres
	// GRPCAddr is where the gRPC API listens and AdminAddr serves /healthz,
	// /readyz and /metrics. Their variables are named after the service
	// (PARLEY_<SERVICE>_GRPC_ADDR, PARLEY_<SERVICE>_ADMIN_ADDR; see
	// ListenVars), so Load reads them, not the env tags; empty: the
	// service's defaults.
	GRPCAddr  string `env:"-"`
	AdminAddr string `env:"-"`
	// Telemetry overrides the service's own telemetry (tests, local stack).
	Telemetry *telemetry.Telemetry `env:"-"`
}

func (c *Config) header() *Config { return c }

// configurable is a pointer to a service configuration embedding Config.
type configurable[C any] interface {
	*C
	header() *Config
}

// Names lists Parley's services in start order.
func Names() []string {
	return []string{"ingest", "lifecycle", "tagging", "reporting", "notification"}
}

// DefaultListen returns the default gRPC and admin addresses of a service
// (ingest :7101 and 127.0.0.1:7201, lifecycle :7102 and 127.0.0.1:7202, and
// so on in the order of Names); admin ports default to loopback. ok is false
// for a name that is not a service.
func DefaultListen(name string) (grpcAddr, adminAddr string, ok bool) {
	for i, n := range Names() {
		if n == name {
			return fmt.Sprintf(":%d", 7101+i), fmt.Sprintf("127.0.0.1:%d", 7201+i), true
		}
	}
	return "", "", false
}

// ListenVars returns the variables that set a service's listen addresses,
// PARLEY_<SERVICE>_GRPC_ADDR and PARLEY_<SERVICE>_ADMIN_ADDR, with their
// defaults.
func ListenVars(name string) map[string]string {
	g, a, _ := DefaultListen(name)
	up := "PARLEY_" + strings.ToUpper(name) + "_"
	return map[string]string{up + "GRPC_ADDR": g, up + "ADMIN_ADDR": a}
}

// Load returns service name's configuration C (a struct embedding Config)
// read from the environment, defaults applied.
func Load[C any, P configurable[C]](name string) (C, error) {
	cfg, err := config.Load[C]()
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", name, err)
	}
	h := P(&cfg).header()
	up := "PARLEY_" + strings.ToUpper(name) + "_"
	h.GRPCAddr, h.AdminAddr = os.Getenv(up+"GRPC_ADDR"), os.Getenv(up+"ADMIN_ADDR")
	h.defaults(name)
	return cfg, nil
}

// defaults fills empty listen addresses with the service's defaults.
func (c *Config) defaults(name string) {
	g, a, _ := DefaultListen(name)
	if c.GRPCAddr == "" {
		c.GRPCAddr = g
	}
	if c.AdminAddr == "" {
		c.AdminAddr = a
	}
}
