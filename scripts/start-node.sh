#!/usr/bin/env bash
# Start one node of a tabos cluster on this host.
#
#   scripts/start-node.sh CLUSTER_FILE NODE_ID [extra tabosd flags...]
#
# Runs tabosd in the foreground (use your init system, tmux or `&` to keep it
# running); the node's socket, address and partitions come from the cluster file.
# The binary is target/release/tabosd (built if missing), or $TABOSD if set. The
# node logs into tabos-data/node-NODE_ID (TABOS_DATA_DIR or --data-dir override it),
# so several nodes on one host keep apart.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: $0 CLUSTER_FILE NODE_ID [tabosd flags...]" >&2
    exit 2
fi
cluster=$1 node=$2
shift 2
[ -f "$cluster" ] || { echo "start-node: no cluster file at $cluster" >&2; exit 2; }
tabosd=${TABOSD:-target/release/tabosd}
if [ ! -x "$tabosd" ]; then
    echo "start-node: building $tabosd" >&2
    cargo build --release -p tabos-server
fi
export TABOS_DATA_DIR=${TABOS_DATA_DIR:-tabos-data/node-$node}
exec "$tabosd" --cluster "$cluster" --node "$node" "$@"
