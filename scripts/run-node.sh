#!/usr/bin/env bash
# Set up (if needed), build in release mode and run a single-node tabosd on defaults:
# one partition per core, socket /tmp/tabos.sock. Extra arguments go to tabosd.
# Stop it with Ctrl-C (SIGINT): it finishes in-flight calls and removes its socket.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --release
exec target/release/tabosd "$@"
