#!/usr/bin/env bash
# Debian's PostgreSQL server binaries for the local cluster stack (infra/local/cluster), installed only
# when missing. The stack runs its own server in its own data folder; the package's default cluster,
# which apt starts on install, is stopped again at once so nothing is left running that nobody uses.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "PostgreSQL is not installed: run 'sudo apt-get install -y postgresql' (or re-run as root)" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q postgresql
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r version name; do
        pg_ctlcluster "$version" "$name" stop || true
    done
fi
