#!/usr/bin/env bash
# Install what tabos needs to build and test on a fresh Debian machine, then build it.
# Safe to run again. Usage: scripts/setup.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "setup: installing ${need_apt[*]}" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "setup: please install: ${need_apt[*]} (needs root)" >&2
        exit 1
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install Rust from https://rustup.rs first" >&2
    exit 1
fi

profile=()
if [ "${1:-}" = "--release" ]; then profile=(--release); fi
echo "setup: building tabos ${profile[*]:-(debug)}" >&2
cargo build "${profile[@]}" --workspace --bins
