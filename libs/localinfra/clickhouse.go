package localinfra

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ClickHouseInstall is the command that installs ClickHouse on this machine kind.
const ClickHouseInstall = "apt-get update && apt-get install -y clickhouse-server clickhouse-client"

// The local server's read-only user (profile readonly = 2: SELECT and
// per-query settings such as max_execution_time, no INSERT, DDL or DROP),
// reporting's PARLEY_CLICKHOUSE_QUERY_USER in the local stack. The writer is
// "default" without a password; both accept loopback connections only.
const (
	ClickHouseQueryUser     = "parley_reader"
	ClickHouseQueryPassword = "parley_reader"
)

// ClickHouseOptions configure a private ClickHouse server.
type ClickHouseOptions struct {
	// Dir holds the server's config, data and logs.
	Dir string
	// TCPPort is the native protocol port; 0 picks a free one.
	TCPPort int
	// HTTPPort is the HTTP port; 0 picks a free one.
	HTTPPort int
	// MaxMemoryBytes caps one query's memory (default 4 GB).
	MaxMemoryBytes int64
	// Output receives the server's stdout/stderr (discarded when nil).
	Output io.Writer
}

// ClickHouse is a running private ClickHouse server.
type ClickHouse struct {
	*Process
	// Addr is host:port of the native protocol.
	Addr     string
	HTTPAddr string
	TCPPort  int
	Dir      string
}

// ClickHouseBinary finds the server binary (Debian's package installs
// clickhouse-server; upstream packages install clickhouse).
func ClickHouseBinary() (path string, args []string, err error) {
	if p, err := lookPath("clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"); err == nil {
		return p, nil, nil
	}
	if p, err := lookPath("clickhouse", "/usr/bin/clickhouse"); err == nil {
		return p, []string{"server"}, nil
	}
	return "", nil, &MissingError{What: "ClickHouse (clickhouse-server)", Install: ClickHouseInstall}
}

// StartClickHouse writes a config under opts.Dir and starts the server,
// returning once it answers /ping.
func StartClickHouse(ctx context.Context, opts ClickHouseOptions) (*ClickHouse, error) {
	bin, args, err := ClickHouseBinary()
	if err != nil {
		return nil, err
	}
	if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return nil, err
	}
	for _, p := range []*int{&opts.TCPPort, &opts.HTTPPort} {
		if *p == 0 {
			if *p, err = FreePort(); err != nil {
				return nil, err
			}
		}
	}
	if err := ensureFree("clickhouse", opts.TCPPort, opts.HTTPPort); err != nil {
		return nil, err
	}
	if opts.MaxMemoryBytes == 0 {
		opts.MaxMemoryBytes = 4_000_000_000
	}
	etc := filepath.Join(opts.Dir, "etc")
	for _, d := range []string{etc, filepath.Join(opts.Dir, "data"), filepath.Join(opts.Dir, "tmp"), filepath.Join(opts.Dir, "user_files"), filepath.Join(opts.Dir, "format_schemas"), filepath.Join(opts.Dir, "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	r := strings.NewReplacer("{DIR}", opts.Dir, "{TCP}", fmt.Sprint(opts.TCPPort), "{HTTP}", fmt.Sprint(opts.HTTPPort), "{MEM}", fmt.Sprint(opts.MaxMemoryBytes),
		"{QUSER}", ClickHouseQueryUser, "{QPASS}", ClickHouseQueryPassword)
	if err := os.WriteFile(filepath.Join(etc, "config.xml"), []byte(r.Replace(clickhouseConfig)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(etc, "users.xml"), []byte(r.Replace(clickhouseUsers)), 0o644); err != nil {
		return nil, err
	}
	// A server killed hard leaves its pid file; a new one refuses to start.
	_ = os.Remove(filepath.Join(opts.Dir, "data", "status"))
	cmd := exec.Command(bin, append(args, "--config-file="+filepath.Join(etc, "config.xml"))...)
	cmd.Dir = opts.Dir
	p, err := startProcess("clickhouse", cmd, syscall.SIGTERM, opts.Output)
	if err != nil {
		return nil, err
	}
	ch := &ClickHouse{Process: p, Addr: fmt.Sprintf("127.0.0.1:%d", opts.TCPPort), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", opts.HTTPPort), TCPPort: opts.TCPPort, Dir: opts.Dir}
	err = waitFor(ctx, p, "clickhouse", 60*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ch.HTTPAddr+"/ping", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ping: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		_ = p.Stop(5 * time.Second)
		if logs, rerr := os.ReadFile(filepath.Join(opts.Dir, "log", "clickhouse-server.err.log")); rerr == nil && len(logs) > 0 {
			err = fmt.Errorf("%w\nlast server errors:\n%s", err, tail(string(logs), 2000))
		}
		return nil, err
	}
	return ch, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// The config works on ClickHouse 18.16 (root element <yandex>) and on current
// releases, which still accept it.
const clickhouseConfig = `<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{DIR}/log/clickhouse-server.log</log>
    <errorlog>{DIR}/log/clickhouse-server.err.log</errorlog>
    <size>50M</size>
    <count>3</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{TCP}</tcp_port>
  <http_port>{HTTP}</http_port>
  <path>{DIR}/data/</path>
  <tmp_path>{DIR}/tmp/</tmp_path>
  <user_files_path>{DIR}/user_files/</user_files_path>
  <format_schema_path>{DIR}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <timezone>UTC</timezone>
</yandex>
`

const clickhouseUsers = `<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>{MEM}</max_memory_usage>
      <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
    </default>
    <readonly>
      <max_memory_usage>{MEM}</max_memory_usage>
      <readonly>2</readonly>
    </readonly>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
    <{QUSER}>
      <password>{QPASS}</password>
      <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
      <profile>readonly</profile>
      <quota>default</quota>
    </{QUSER}>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
`
