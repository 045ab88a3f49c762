#!/usr/bin/env bash
# Install the Debian packages that `cargo build -p tabos-transport --features rdma`
# needs: the verbs and rdma_cm headers and libraries that `rdma-sys` links against,
# and the libclang that its bindgen build script loads. Idempotent: packages already
# installed are left as they are. Needs root. CI calls it before the rdma build.
# Usage: scripts/install-rdma-deps.sh
# Exit codes: 0 installed (or already present), 1 not root, other: apt-get's failure.
set -euo pipefail

packages=(libibverbs-dev librdmacm-dev libclang1-14 libclang-common-14-dev)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-rdma-deps: already installed: ${packages[*]}" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-rdma-deps: needs root to install: ${missing[*]}" >&2
    exit 1
fi
echo "install-rdma-deps: installing ${missing[*]}" >&2
apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
