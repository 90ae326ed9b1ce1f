package localinfra

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// MachinePostgresRole is the role tests use on the machine's own cluster.
const MachinePostgresRole = "parley_test"

// MachinePostgres returns an admin URL for the machine's installed PostgreSQL
// cluster (Debian's 5432 "main"), starting the cluster if it is stopped and
// creating a password role that may create databases. It needs root (to run
// pg_ctlcluster and psql as the postgres user) unless the role already exists.
func MachinePostgres(ctx context.Context) (string, error) {
	url := fmt.Sprintf("postgres://%s:%s@127.0.0.1:5432/postgres?sslmode=disable", MachinePostgresRole, MachinePostgresRole)
	if ping(ctx, url) == nil {
		return url, nil
	}
	if _, err := PostgresBinDir(); err != nil {
		return "", err
	}
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil {
		return "", &MissingError{What: "PostgreSQL cluster tools (pg_ctlcluster)", Install: PostgresInstall}
	}
	out, err := exec.CommandContext(ctx, "pg_lsclusters", "--no-header").Output()
	if err != nil {
		return "", fmt.Errorf("localinfra: pg_lsclusters: %w", err)
	}
	var version, name string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[2] == "5432" {
			version, name = f[0], f[1]
			if f[3] != "online" {
				if out, err := exec.CommandContext(ctx, "pg_ctlcluster", version, name, "start").CombinedOutput(); err != nil {
					return "", fmt.Errorf("localinfra: pg_ctlcluster %s %s start: %v\n%s", version, name, err, out)
				}
			}
		}
	}
	if version == "" {
		return "", fmt.Errorf("localinfra: no PostgreSQL cluster on port 5432 (create one with: pg_createcluster 15 main --start)")
	}
	sql := fmt.Sprintf(`DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%[1]s') THEN
    CREATE ROLE %[1]s LOGIN CREATEDB PASSWORD '%[1]s';
  END IF;
END $$;`, MachinePostgresRole)
	deadline := time.Now().Add(30 * time.Second)
	for {
		cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql)
		cmd.Dir = os.TempDir()
		out, err := cmd.CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("localinfra: create role %s: %v\n%s", MachinePostgresRole, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := ping(ctx, url); err != nil {
		return "", fmt.Errorf("localinfra: machine PostgreSQL: %w", err)
	}
	return url, nil
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	return c.Close(ctx)
}
