#!/usr/bin/env bash
# Configure soft-RoCE (the kernel's rdma_rxe driver) on a network interface, so tabos
# can run its RDMA transport (`--features rdma`) on a host without an RDMA NIC.
#
# Usage: scripts/setup-softroce.sh IFACE      e.g. scripts/setup-softroce.sh eth0
#
# Loads rdma_rxe, then runs `rdma link add rxe0 type rxe netdev IFACE` unless an rxe
# device already sits on IFACE, and shows `rdma link show`. Needs root, a kernel with
# the rdma_rxe module (CONFIG_RDMA_RXE) and the `rdma` tool from iproute2. The user-space
# side (libibverbs with its rxe provider) comes from scripts/install-rdma-deps.sh.
#
# Exit codes:
#   0  an rxe device is configured on IFACE (created now or already there)
#   2  usage: IFACE missing, or no such interface
#   3  not running as root
#   4  this kernel has no rdma_rxe (soft-RoCE) module, or it would not load
#   5  the `rdma` tool (iproute2) is missing
#   6  `rdma link add` failed (or rxe0 already sits on another interface)
#   other: an unexpected command failure (set -e)
set -euo pipefail

usage() {
    echo "usage: $0 IFACE   (configure soft-RoCE device rxe0 on network interface IFACE)" >&2
    echo "interfaces here: $(ls /sys/class/net 2>/dev/null | tr '\n' ' ')" >&2
}

fail() {
    local code=$1
    shift
    echo "setup-softroce: $*" >&2
    exit "$code"
}

if [ "$#" -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    usage
    exit 2
fi
iface=$1
rxe=rxe0

[ -e "/sys/class/net/$iface" ] || { usage; fail 2 "no network interface named '$iface'"; }
[ "$(id -u)" -eq 0 ] || fail 3 "must run as root (loads a kernel module and adds an RDMA link)"

# The kernel side: rdma_rxe, built in or as a module.
kernel=$(uname -r)
if [ -d /sys/module/rdma_rxe ]; then
    echo "setup-softroce: rdma_rxe already loaded" >&2
elif grep -qs '/rdma_rxe\.ko' "/lib/modules/$kernel/modules.builtin"; then
    echo "setup-softroce: rdma_rxe is built into kernel $kernel" >&2
elif command -v modprobe >/dev/null 2>&1; then
    if ! modprobe rdma_rxe 2>/dev/null; then
        fail 4 "this kernel has no rdma_rxe (soft-RoCE) module: 'modprobe rdma_rxe' failed on kernel $kernel (needs CONFIG_RDMA_RXE and InfiniBand support); use a host whose kernel has it, or real RDMA hardware"
    fi
    echo "setup-softroce: loaded rdma_rxe" >&2
else
    if find "/lib/modules/$kernel" -name 'rdma_rxe.ko*' 2>/dev/null | grep -q .; then
        fail 4 "rdma_rxe exists for kernel $kernel but modprobe is missing: install kmod (apt-get install kmod) and run again"
    fi
    fail 4 "this kernel has no rdma_rxe (soft-RoCE) module: kernel $kernel has neither it built in nor a module for it (and modprobe is missing); use a host whose kernel has CONFIG_RDMA_RXE, or real RDMA hardware"
fi

command -v rdma >/dev/null 2>&1 \
    || fail 5 "the 'rdma' tool is missing: install iproute2 (apt-get install iproute2)"

# One rxe device per interface: keep an existing one.
if rdma link show 2>/dev/null | grep -Eq "netdev $iface( |\$)"; then
    echo "setup-softroce: an RDMA link already uses $iface" >&2
elif rdma link show 2>/dev/null | grep -q "^link $rxe/"; then
    fail 6 "$rxe already exists on another interface: remove it with 'rdma link delete $rxe' first"
else
    rdma link add "$rxe" type rxe netdev "$iface" \
        || fail 6 "'rdma link add $rxe type rxe netdev $iface' failed"
    echo "setup-softroce: added $rxe on $iface" >&2
fi

rdma link show
if command -v ibv_devices >/dev/null 2>&1; then
    ibv_devices
fi
echo "setup-softroce: done; run the RDMA tests with: cargo test -p tabos-transport --features rdma" >&2
