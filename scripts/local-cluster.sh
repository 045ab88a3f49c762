#!/usr/bin/env bash
# A cluster of N tabos nodes on this machine, for development and CI: node i binds
# 127.0.0.i:7100, its socket and log live in $TABOS_CLUSTER_DIR/node-i/.
#
#   scripts/local-cluster.sh start N [PARTITIONS_PER_NODE]   # default 1 partition each
#   scripts/local-cluster.sh status
#   scripts/local-cluster.sh stop
#
# The cluster file is $TABOS_CLUSTER_DIR/cluster.toml (default dir: /tmp/tabos-cluster)
# and the secret $TABOS_CLUSTER_DIR/secret. Talk to it with, e.g.:
#   export TABOS_SECRET_FILE=/tmp/tabos-cluster/secret
#   target/release/tabos --connect /tmp/tabos-cluster/node-1/tabos.sock status
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TABOS_CLUSTER_DIR:-/tmp/tabos-cluster}
tabosd=${TABOSD:-target/release/tabosd}
tabos=${TABOS:-target/release/tabos}
port=${TABOS_CLUSTER_PORT:-7100}

usage() {
    echo "usage: $0 start N [PARTITIONS_PER_NODE] | status | stop" >&2
    exit 2
}

build() {
    if [ ! -x "$tabosd" ] || [ ! -x "$tabos" ]; then
        echo "local-cluster: building tabosd and tabos" >&2
        cargo build --release -p tabos-server -p tabos-client
    fi
}

start() {
    local n=${1:-} parts=${2:-1}
    [[ "$n" =~ ^[1-9][0-9]?$ ]] || usage
    [ -f "$dir/cluster.toml" ] && { echo "local-cluster: already running in $dir (stop it first)" >&2; exit 1; }
    build
    mkdir -p "$dir"
    head -c 32 /dev/urandom | base64 > "$dir/secret"
    chmod 600 "$dir/secret"
    {
        echo "secret_file = \"secret\""
        for i in $(seq 1 "$n"); do
            mkdir -p "$dir/node-$i"
            printf '\n[[node]]\nid = %d\naddress = "127.0.0.%d:%d"\nsocket = "%s/node-%d/tabos.sock"\npartitions = %d\n' \
                "$i" "$i" "$port" "$dir" "$i" "$parts"
        done
    } > "$dir/cluster.toml"
    for i in $(seq 1 "$n"); do
        "$tabosd" --cluster "$dir/cluster.toml" --node "$i" --no-pin --spin-us 20 \
            --data-dir "$dir/node-$i/data" \
            > "$dir/node-$i/log" 2>&1 &
        echo $! > "$dir/node-$i/pid"
    done
    for i in $(seq 1 "$n"); do
        for _ in $(seq 1 100); do
            [ -S "$dir/node-$i/tabos.sock" ] && break
            sleep 0.1
        done
        [ -S "$dir/node-$i/tabos.sock" ] || { echo "local-cluster: node $i did not start; see $dir/node-$i/log" >&2; cat "$dir/node-$i/log" >&2; stop; exit 1; }
    done
    echo "local-cluster: $n nodes up; cluster file $dir/cluster.toml, secret $dir/secret"
}

status() {
    [ -f "$dir/cluster.toml" ] || { echo "local-cluster: not running (no $dir/cluster.toml)"; exit 1; }
    local first
    first=$(ls -d "$dir"/node-* | head -1)
    TABOS_SECRET_FILE="$dir/secret" "$tabos" --connect "$first/tabos.sock" status
}

stop() {
    [ -d "$dir" ] || { echo "local-cluster: not running"; return 0; }
    for pidfile in "$dir"/node-*/pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pidfile in "$dir"/node-*/pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
    echo "local-cluster: stopped"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    status) status ;;
    stop) stop ;;
    *) usage ;;
esac
