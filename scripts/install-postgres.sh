#!/usr/bin/env bash
# Install the PostgreSQL server that tabos-bench measures as its PL/pgSQL baseline
# (bench/src/baseline/postgres.rs): the Debian package `postgresql`, which provides
# initdb, pg_ctl and postgres in /usr/lib/postgresql/<version>/bin and the `postgres`
# system user the benchmark runs the server as (PostgreSQL refuses to run as root).
# Idempotent: does nothing when the binaries are already there. Needs root (and apt
# access) only to install. tabos-bench runs this script itself when the binaries are
# missing; CI runs it before the benchmark smoke tests.
# Usage: scripts/install-postgres.sh
# Prints the binaries' directory on stdout, progress on stderr.
# Exit codes: 0 present (or installed), 1 not root, 2 installed but no binaries found,
# other: apt-get's failure.
set -euo pipefail

# The directory holding initdb, pg_ctl and postgres: pg_ctl on PATH (through symlinks),
# else the newest /usr/lib/postgresql/<version>/bin.
find_bin_dir() {
    local dir
    if command -v pg_ctl >/dev/null 2>&1; then
        dir=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if dir=$(find_bin_dir); then
    echo "install-postgres: already installed: $("$dir/postgres" --version) in $dir" >&2
    echo "$dir"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-postgres: no PostgreSQL server binaries (initdb, pg_ctl, postgres);" \
        "installing the Debian package postgresql needs root: sudo $0" >&2
    exit 1
fi
echo "install-postgres: no PostgreSQL server binaries; running apt-get update and" \
    "apt-get install -y postgresql" >&2
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
if ! dir=$(find_bin_dir); then
    echo "install-postgres: installed postgresql, but found no initdb/pg_ctl/postgres" \
        "on PATH or in /usr/lib/postgresql/*/bin" >&2
    exit 2
fi
echo "install-postgres: installed $("$dir/postgres" --version) in $dir" >&2
echo "$dir"
