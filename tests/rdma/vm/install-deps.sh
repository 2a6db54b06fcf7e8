#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# install-deps.sh - install the Debian packages the Soft-RoCE VM harness needs,
# skipping the ones already installed.
#
# Usage: install-deps.sh [-n]
#   -n   dry run: print what is missing, install nothing (exit 1 if anything is)
#
# The VM boots Debian's stock kernel (linux-image-amd64), which ships rdma_rxe
# as a module; the host kernel does not need RDMA. Installing the kernel
# package only puts files in /boot and /lib/modules: INITRD=No skips the
# distribution initramfs (we build our own), so its postinst stays quick and
# cannot fail on a container's missing /proc bits.
set -euo pipefail

PKGS=(
    busybox-static      # /init and the VM's userland
    cpio                # initramfs archives
    ibverbs-providers   # librxe provider + /etc/libibverbs.d/rxe.driver
    ibverbs-utils       # ibv_devinfo, ibv_*_pingpong
    iproute2            # ip, rdma (rdma link add ... type rxe)
    kmod                # modinfo/depmod on the host (the VM uses busybox insmod)
    libibverbs-dev      # headers for the project's verbs code
    librdmacm-dev
    linux-image-amd64   # the guest kernel and its rdma_rxe module
    perftest            # ib_read_lat and friends
    qemu-system-x86
    rdma-core
    rdmacm-utils        # rping, ucmatose
    xz-utils            # Debian modules are .ko.xz
    zstd                # in case a kernel image or modules use zstd
)

DRY=0
while getopts "nh" opt; do
    case $opt in
    n) DRY=1 ;;
    h) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) exit 2 ;;
    esac
done

missing=()
for p in "${PKGS[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing+=("$p")
done
# a kernel meta package installed but its modules gone (e.g. /lib/modules wiped)
if ! ls /lib/modules/*/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko* >/dev/null 2>&1; then
    case " ${missing[*]} " in
    *" linux-image-amd64 "*) ;;
    *) missing+=(linux-image-amd64); REINSTALL_KERNEL=1 ;;
    esac
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "[install-deps] all ${#PKGS[@]} packages present"
    exit 0
fi
echo "[install-deps] missing: ${missing[*]}"
[ $DRY = 1 ] && exit 1

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Skip the distribution initramfs: the kernel hooks in /etc/kernel/postinst.d
# honour INITRD=No, and we never boot that initramfs.
export INITRD=No
apt_get() { $SUDO env DEBIAN_FRONTEND=noninteractive INITRD=No apt-get -y -q "$@"; }
# an old package list may lack the current kernel version: update once on failure
if ! apt_get install --no-install-recommends "${missing[@]}"; then
    apt_get update
    apt_get install --no-install-recommends "${missing[@]}"
fi
if [ "${REINSTALL_KERNEL:-0}" = 1 ]; then
    img=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | sed 's/[ ,(].*//')
    apt_get install --reinstall --no-install-recommends "$img"
fi
ls /lib/modules/*/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko* >/dev/null 2>&1 ||
    { echo "[install-deps] rdma_rxe module still missing" >&2; exit 1; }
echo "[install-deps] done"
