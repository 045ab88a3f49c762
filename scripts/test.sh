#!/usr/bin/env bash
# The whole test suite: unit and integration tests of every crate, and the quick
# benchmark smoke tests. Usage: scripts/test.sh [--full]
#   --full: also kill tabosd 200 times under load (the crash test's long run; CI runs
#   its 20 cycles with the rest)
set -euo pipefail
cd "$(dirname "$0")/.."
full=0
case "${1:-}" in
    "") ;;
    --full) full=1 ;;
    *) echo "usage: scripts/test.sh [--full]" >&2; exit 2 ;;
esac
scripts/setup.sh
# The PostgreSQL baseline of the benchmarks (installed from Debian packages if missing).
scripts/install-postgres.sh
# Integration tests start the real binaries; build them first.
cargo build --workspace --bins
cargo test --workspace --all-targets
# The RDMA transport (cargo feature `rdma`): needs libibverbs/librdmacm headers.
# This machine has no RDMA device; tests that need one print `skipped: no RDMA device`.
scripts/install-rdma-deps.sh
cargo test -p tabos-transport --features rdma
# Quick benchmark smoke test in release mode (fails only if a workload errors).
cargo build --release -p tabos-server -p tabos-bench
target/release/tabos-bench all --quick --json target/bench-smoke.json --plots target/bench-smoke-plots
if [ "$full" -eq 1 ]; then
    TABOS_CRASH_CYCLES=200 cargo test -p tabos-server --test crash -- --nocapture
fi
