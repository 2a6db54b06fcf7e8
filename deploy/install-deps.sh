#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Install the Debian packages kvdex needs to build and test, skipping the ones
# already installed. Idempotent; needs root (or sudo) only when something is
# missing. Debian 12 (bookworm) is the reference system.
#
#   deploy/install-deps.sh [--dry-run] [--with GROUP]...
#
# Groups: "base" (always: build + unit/integration tests, and the perf-smoke
# suite, whose `kvdex-bench baseline` runs start a real redis-server and
# memcached and whose build links hiredis). "baseline" names just those three
# packages, for a host that only runs the baselines. Later issues add groups
# (e.g. "rdma-vm" for the Soft-RoCE VM suite) to PKG_GROUPS below.
# Note: on a host with systemd, Debian's redis-server and memcached packages
# also enable system services on 127.0.0.1:6379 / :11211; kvdex-bench starts
# its own servers on free ports and does not use them.
set -euo pipefail

declare -A PKG_GROUPS=(
    [base]="build-essential meson ninja-build pkg-config libibverbs-dev librdmacm-dev
            liburcu-dev libprotobuf-c-dev protobuf-c-compiler libcriterion-dev
            libxxhash-dev libssl-dev libmsgpack-dev libzmq3-dev
            python3 python3-zmq python3-msgpack gnuplot-nox
            libhiredis-dev memcached redis-server"
    [baseline]="libhiredis-dev memcached redis-server"
)

usage() {
    echo "usage: $0 [--dry-run] [--with GROUP]...  (groups: ${!PKG_GROUPS[*]})" >&2
    exit 2
}

dry_run=0
want=(base)
while [[ $# -gt 0 ]]; do
    case "$1" in
    --dry-run) dry_run=1 ;;
    --with)
        [[ $# -ge 2 && -n "${PKG_GROUPS[$2]+x}" ]] || usage
        want+=("$2")
        shift
        ;;
    -h | --help) usage ;;
    *) usage ;;
    esac
    shift
done

installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

missing=()
for g in "${want[@]}"; do
    for p in ${PKG_GROUPS[$g]}; do
        [[ " ${missing[*]} " == *" $p "* ]] && continue
        installed "$p" || missing+=("$p")
    done
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all packages present (${want[*]})"
    exit 0
fi
echo "install-deps: installing: ${missing[*]}"
if [[ $dry_run -eq 1 ]]; then
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || {
        echo "install-deps: not root and no sudo" >&2
        exit 1
    }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
