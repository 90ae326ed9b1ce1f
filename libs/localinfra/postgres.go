package localinfra

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresInstall is the command that installs PostgreSQL on this machine kind.
const PostgresInstall = "apt-get update && apt-get install -y postgresql"

// PostgresBinDir finds the newest installed PostgreSQL server binaries
// (Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH).
func PostgresBinDir() (string, error) {
	if d := os.Getenv("PARLEY_PG_BINDIR"); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Slice(matches, func(i, j int) bool { return pgVersion(matches[i]) > pgVersion(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", &MissingError{What: "PostgreSQL server", Install: PostgresInstall}
}

func pgVersion(binPath string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(binPath))))
	return v
}

// PostgresOptions configure a private PostgreSQL cluster.
type PostgresOptions struct {
	// Dir is the cluster's data directory (created with initdb when empty).
	Dir  string
	Port int
	// Database, User and Password are created if missing.
	Database string
	User     string
	Password string
	// Durable keeps fsync on (the local stack); tests turn it off for speed.
	Durable bool
	Output  io.Writer
}

// Postgres is a running private cluster.
type Postgres struct {
	*Process
	// URL connects as opts.User to opts.Database.
	URL string
	// AdminURL connects as the superuser to the postgres database.
	AdminURL string
}

// runAs returns the credential to run PostgreSQL with: root may not run it,
// so root runs it as the "postgres" system user.
func runAs() (*syscall.Credential, *user.User, error) {
	if os.Geteuid() != 0 {
		return nil, nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, nil, fmt.Errorf("localinfra: running as root needs the postgres system user (%s): %w", PostgresInstall, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, u, nil
}

// StartPostgres initialises (first time) and starts a private cluster that
// listens on 127.0.0.1:opts.Port only, with trust authentication.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return nil, err
	}
	if opts.Port == 0 {
		if opts.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if err := ensureFree("postgres", opts.Port); err != nil {
		return nil, err
	}
	cred, u, err := runAs()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(opts.Dir), 0o755); err != nil {
		return nil, err
	}
	if err := os.Mkdir(opts.Dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(opts.Dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(opts.Dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", opts.Dir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("localinfra: initdb: %v\n%s", err, out)
		}
	}
	args := []string{"-D", opts.Dir, "-p", strconv.Itoa(opts.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
		"-c", "max_connections=200", "-c", "shared_buffers=256MB"}
	if !opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	// SIGINT is PostgreSQL's "fast shutdown": abort sessions, checkpoint, exit.
	p, err := startProcess("postgres", cmd, syscall.SIGINT, opts.Output)
	if err != nil {
		return nil, err
	}
	admin := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", opts.Port)
	err = waitFor(ctx, p, "postgres", 60*time.Second, func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	if err != nil {
		_ = p.Stop(10 * time.Second)
		return nil, err
	}
	pg := &Postgres{Process: p, AdminURL: admin}
	if opts.Database != "" {
		if err := EnsureRoleAndDatabase(ctx, admin, opts.User, opts.Password, opts.Database); err != nil {
			_ = p.Stop(10 * time.Second)
			return nil, err
		}
		pg.URL = (&url.URL{Scheme: "postgres", User: url.UserPassword(opts.User, opts.Password), Host: fmt.Sprintf("127.0.0.1:%d", opts.Port), Path: "/" + opts.Database, RawQuery: "sslmode=disable"}).String()
	}
	return pg, nil
}

// EnsureRoleAndDatabase creates a login role and a database it owns, if they
// do not exist yet.
func EnsureRoleAndDatabase(ctx context.Context, adminURL, role, password, database string) error {
	c, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("localinfra: connect: %w", err)
	}
	defer c.Close(ctx)
	var exists bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := c.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD %s`, pgx.Identifier{role}.Sanitize(), quoteLiteral(password))); err != nil {
			return fmt.Errorf("localinfra: create role: %w", err)
		}
	}
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, database).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := c.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, pgx.Identifier{database}.Sanitize(), pgx.Identifier{role}.Sanitize())); err != nil {
			return fmt.Errorf("localinfra: create database: %w", err)
		}
	}
	return nil
}

func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// PostgresCanReach reports whether the user PostgreSQL runs as can reach dir
// (every existing ancestor searchable by "other", or the process is not root).
// A clone under /root, say, is not reachable by the postgres user.
func PostgresCanReach(dir string) bool {
	if os.Geteuid() != 0 {
		return true
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}
