#!/usr/bin/env bash
# Debian's PostgreSQL server binaries for the local cluster stack (infra/local/cluster), installed only
# when missing. The stack runs its own server in its own data folder; the package's default cluster,
# which apt starts on install, is stopped again at once so nothing is left running that nobody uses.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../apt_install.sh"
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
apt_install postgresql PostgreSQL
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r version name; do
        pg_ctlcluster "$version" "$name" stop || true
    done
fi
