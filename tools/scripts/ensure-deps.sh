#!/usr/bin/env bash
# Installs the machine packages Parley's local stack and tests need, when they
# are missing: ClickHouse (server and client) and PostgreSQL. NATS needs
# nothing: it is embedded. Safe to run repeatedly.
set -euo pipefail

need=()
if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/sbin/clickhouse-server ] && [ ! -x /usr/bin/clickhouse ]; then
  need+=(clickhouse-server)
fi
if ! command -v clickhouse-client >/dev/null 2>&1 && [ ! -x /usr/bin/clickhouse ]; then
  need+=(clickhouse-client)
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  need+=(postgresql)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Parley needs these packages: ${need[*]}" >&2
  echo "Install them with: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "Installing ${need[*]} (Debian packages) ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
