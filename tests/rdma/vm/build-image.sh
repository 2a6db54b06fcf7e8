#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# build-image.sh - build the kvdex Soft-RoCE VM image from this machine's
# Debian packages: a small initramfs (busybox, rdma-core userland, perftest,
# the rdma_rxe module stack, our /init) and the guest kernel unpacked to an
# ELF vmlinux for a direct PVH boot.
#
# Usage: build-image.sh [-k KVER] [-f] [-q]
#   -k KVER   kernel version under /lib/modules (default: newest with rdma_rxe)
#   -f        rebuild even when the cache is current
#   -q        print nothing when the cache is current
#
# The archive is not compressed: the kernel unpacks a plain cpio faster than it
# gunzips one under TCG.
# Output directory: $KVDEX_VM_BUILD, else $MESON_BUILD_ROOT/rdma-vm, else
# <repo>/build/rdma-vm. It holds
#   initramfs-KVER.cpio   the base image (run-vm.sh appends a per-run overlay)
#   initramfs-KVER.files     every path in it (run-vm.sh skips libs listed here)
#   vmlinux-KVER             the uncompressed kernel (PVH entry point)
#   image-KVER.key           the cache key the image was built from
# The cache key covers this script, init.sh and the versions of every package
# the image takes files from; when it is unchanged the build is skipped.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
OUTDIR=${KVDEX_VM_BUILD:-${MESON_BUILD_ROOT:+$MESON_BUILD_ROOT/rdma-vm}}
OUTDIR=${OUTDIR:-$REPO/build/rdma-vm}
MA=x86_64-linux-gnu
KVER=""
FORCE=0
QUIET=0

while getopts "k:fqh" opt; do
    case $opt in
    k) KVER=$OPTARG ;;
    f) FORCE=1 ;;
    q) QUIET=1 ;;
    h) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) exit 2 ;;
    esac
done

say() { echo "[build-image] $*" >&2; }
die() { say "error: $*"; exit 1; }

if [ -z "$KVER" ]; then
    for d in $(ls -1 /lib/modules 2>/dev/null | sort -rV); do
        if ls /lib/modules/"$d"/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko* >/dev/null 2>&1 &&
            [ -f /boot/vmlinuz-"$d" ]; then
            KVER=$d
            break
        fi
    done
fi
[ -n "$KVER" ] || die "no kernel with rdma_rxe under /lib/modules (run install-deps.sh)"
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || die "no $MODDIR/modules.dep"
[ -f "/boot/vmlinuz-$KVER" ] || die "no /boot/vmlinuz-$KVER"

mkdir -p "$OUTDIR"
IMG=$OUTDIR/initramfs-$KVER.cpio
FILES=$OUTDIR/initramfs-$KVER.files
VMLINUX=$OUTDIR/vmlinux-$KVER
KEYFILE=$OUTDIR/image-$KVER.key

# --- cache key ------------------------------------------------------------------
KEY_PKGS="busybox-static ibverbs-providers ibverbs-utils iproute2 libc6 libgcc-s1
    libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 perftest rdmacm-utils"
cache_key() {
    {
        echo "kver $KVER"
        sha256sum "$0" "$HERE/init.sh" | awk '{print $1}'
        stat -c '%s %Y %n' "/boot/vmlinuz-$KVER" "$MODDIR/modules.dep"
        # shellcheck disable=SC2086
        dpkg-query -W -f='${Package} ${Version}\n' $KEY_PKGS 2>/dev/null || true
    } | sha256sum | awk '{print $1}'
}
KEY=$(cache_key)
if [ $FORCE = 0 ] && [ -f "$IMG" ] && [ -f "$VMLINUX" ] && [ -f "$FILES" ] &&
    [ "$(cat "$KEYFILE" 2>/dev/null)" = "$KEY" ]; then
    [ $QUIET = 1 ] || say "cached: $IMG"
    exit 0
fi
t0=$(date +%s.%N)

# --- kernel: the bzImage wraps an xz/zstd/gzip ELF; PVH boots that ELF directly -----
# Same idea as the kernel's scripts/extract-vmlinux: try each compression magic.
extract_vmlinux() {
    local img=$1 out=$2 magic tool off
    for pair in 'fd377a585a00:xz -dcq --single-stream' '28b52ffd:zstd -dcq' '1f8b0800:gzip -dcq'; do
        magic=${pair%%:*}
        tool=${pair#*:}
        for off in $(LC_ALL=C grep -obUaP "$(echo "$magic" | sed 's/../\\x&/g')" "$img" |
            cut -d: -f1 | head -5); do
            tail -c +$((off + 1)) "$img" | $tool > "$out.tmp" 2>/dev/null || true
            if [ "$(head -c4 "$out.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
                mv "$out.tmp" "$out"
                return 0
            fi
        done
    done
    rm -f "$out.tmp"
    return 1
}
extract_vmlinux "/boot/vmlinuz-$KVER" "$VMLINUX" || die "cannot unpack /boot/vmlinuz-$KVER"

STAGE=$(mktemp -d /tmp/kvdex-vm-image.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT

# --- skeleton (usr-merged, as Debian 12) -------------------------------------------
mkdir -p "$STAGE"/usr/{bin,sbin,lib/$MA/libibverbs,lib64} \
    "$STAGE"/{dev,proc,sys,tmp,run,root,etc/libibverbs.d,kvdex-vm}
ln -s usr/bin "$STAGE/bin"
ln -s usr/sbin "$STAGE/sbin"
ln -s usr/lib "$STAGE/lib"
ln -s usr/lib64 "$STAGE/lib64"
chmod 1777 "$STAGE/tmp"
if [ "$(id -u)" = 0 ]; then
    # the kernel opens /dev/console for /init before devtmpfs is mounted
    mknod -m 600 "$STAGE/dev/console" c 5 1
    mknod -m 666 "$STAGE/dev/null" c 1 3
else
    say "not root: no /dev/console node (init redirects once devtmpfs is up)"
fi
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$STAGE/etc/passwd"
printf 'root:x:0:\n' > "$STAGE/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$STAGE/etc/hosts"
printf 'passwd: files\ngroup: files\nhosts: files\n' > "$STAGE/etc/nsswitch.conf"

# canonical in-image path of a host file: /lib/... is /usr/lib/... (usr-merge)
canon() {
    case $1 in
    /lib/* | /bin/* | /sbin/* | /lib64/*) echo "/usr$1" ;;
    *) echo "$1" ;;
    esac
}

# stage PATH: copy the resolved file, keep the requested name as a symlink
stage_file() {
    local want real dst link
    want=$(canon "$1")
    real=$(readlink -f "$1")
    dst=$(canon "$real")
    if [ ! -e "$STAGE$dst" ]; then
        mkdir -p "$STAGE$(dirname "$dst")"
        cp "$real" "$STAGE$dst"
    fi
    if [ "$want" != "$dst" ] && [ ! -e "$STAGE$want" ] && [ ! -L "$STAGE$want" ]; then
        mkdir -p "$STAGE$(dirname "$want")"
        link=$dst
        [ "$(dirname "$want")" = "$(dirname "$dst")" ] && link=$(basename "$dst")
        ln -s "$link" "$STAGE$want"
    fi
}

# every shared library (and the loader) that the ELF files need, once each
stage_libs() {
    local f
    for f in "$@"; do
        ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(0x/{print $1}'
    done | sort -u | while read -r lib; do
        stage_file "$lib"
    done
}

# --- userland ----------------------------------------------------------------------
file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' ||
    [ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] ||
    die "need a static busybox (busybox-static)"
cp /bin/busybox "$STAGE/usr/bin/busybox"

TOOLS="/usr/sbin/ip /usr/bin/rdma
    /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/ibv_rc_pingpong /usr/bin/ibv_ud_pingpong
    /usr/bin/ibv_srq_pingpong /usr/bin/ibv_asyncwatch
    /usr/bin/rping /usr/bin/ucmatose /usr/bin/udaddy /usr/bin/rdma_server /usr/bin/rdma_client
    /usr/bin/rstream /usr/bin/cmtime
    /usr/bin/ib_read_lat /usr/bin/ib_write_lat /usr/bin/ib_send_lat /usr/bin/ib_atomic_lat
    /usr/bin/ib_read_bw /usr/bin/ib_write_bw /usr/bin/ib_send_bw /usr/bin/ib_atomic_bw"
elfs=()
for t in $TOOLS; do
    if [ -e "$t" ]; then
        stage_file "$t"
        elfs+=("$t")
    else
        say "warning: $t missing, not in the image"
    fi
done

# verbs provider: rxe only. libibverbs reads /etc/libibverbs.d/*.driver and
# dlopen()s lib<name>-rdmav<N>.so from its compiled-in provider directory.
cp /etc/libibverbs.d/rxe.driver "$STAGE/etc/libibverbs.d/"
prov=$(ls /usr/lib/$MA/libibverbs/librxe-rdmav*.so 2>/dev/null | head -1)
[ -n "$prov" ] || die "no librxe provider (ibverbs-providers)"
stage_file "$prov"
elfs+=("$prov")
# glibc dlopen()s libgcc_s for pthread_exit/pthread_cancel unwinding (rping)
stage_file /usr/lib/$MA/libgcc_s.so.1
stage_file /usr/lib/$MA/libibverbs.so.1
stage_file /usr/lib/$MA/librdmacm.so.1
elfs+=("/usr/lib/$MA/libibverbs.so.1" "/usr/lib/$MA/librdmacm.so.1")
stage_libs "${elfs[@]}"

printf '/usr/lib/%s\n/usr/lib/%s/libibverbs\n' $MA $MA > "$STAGE/etc/ld.so.conf"
ldconfig -r "$STAGE" 2>/dev/null || say "warning: ldconfig -r failed (no ld.so.cache)"

# busybox applet links, after the real tools (iproute2 ip wins over the applet),
# made here, not by "busybox --install" at boot (forks are slow under TCG)
for a in $(/bin/busybox --list-full); do
    a=$(canon "/$a")
    [ -e "$STAGE$a" ] || [ -L "$STAGE$a" ] || ln -s /usr/bin/busybox "$STAGE$a"
done

# --- kernel modules ----------------------------------------------------------------
# The wanted modules plus their modules.dep closure. crc32 is not in modules.dep:
# rxe asks the crypto API for "crc32" at run time, so load it explicitly.
WANT="dummy crc32_generic crc32-pclmul configfs ib_core ib_uverbs ib_cm iw_cm rdma_cm
    rdma_ucm udp_tunnel ip6_udp_tunnel rdma_rxe"
declare -A DEPS PATHOF
while IFS= read -r line; do
    rel=${line%%:*}
    name=${rel##*/}
    name=${name%%.ko*}
    name=${name//-/_}
    PATHOF[$name]=$rel
    DEPS[$rel]=${line#*:}
done < "$MODDIR/modules.dep"

declare -A SEEN
ORDER=()
visit() { # depth-first, dependencies first
    local rel=$1 d
    [ -n "${SEEN[$rel]:-}" ] && return 0
    SEEN[$rel]=1
    for d in ${DEPS[$rel]}; do
        visit "$d"
    done
    ORDER+=("$rel")
}
for m in $WANT; do
    rel=${PATHOF[${m//-/_}]:-}
    if [ -z "$rel" ]; then
        # built into this kernel, or absent; built-in is fine
        grep -q "/${m}.ko" "$MODDIR/modules.builtin" 2>/dev/null || say "note: module $m not found"
        continue
    fi
    visit "$rel"
done

KM=$STAGE/usr/lib/modules/$KVER
mkdir -p "$KM"
: > "$STAGE/etc/kvdex-vm-modules"
: > "$KM/modules.dep"
for rel in "${ORDER[@]}"; do
    src=$MODDIR/$rel
    out=${rel%.xz}
    out=${out%.zst}
    out=${out%.gz}
    mkdir -p "$KM/$(dirname "$out")"
    case $rel in
    *.ko.xz) xz -dc "$src" > "$KM/$out" ;;
    *.ko.zst) zstd -qdc "$src" > "$KM/$out" ;;
    *.ko.gz) gzip -dc "$src" > "$KM/$out" ;;
    *) cp "$src" "$KM/$out" ;;
    esac
    deps=""
    for d in ${DEPS[$rel]}; do
        d=${d%.xz}
        d=${d%.zst}
        deps="$deps ${d%.gz}"
    done
    echo "$out:$deps" >> "$KM/modules.dep"
    echo "$out" >> "$STAGE/etc/kvdex-vm-modules"
done
for f in modules.builtin modules.order; do
    [ -f "$MODDIR/$f" ] && cp "$MODDIR/$f" "$KM/"
done
echo "$KVER" > "$STAGE/etc/kvdex-vm-kver"

# --- /init -------------------------------------------------------------------------
install -m 755 "$HERE/init.sh" "$STAGE/init"

(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
    cat > "$IMG.tmp"
(cd "$STAGE" && find . -mindepth 1 | sed 's|^\.||' | LC_ALL=C sort) > "$FILES"
mv "$IMG.tmp" "$IMG"
echo "$KEY" > "$KEYFILE"
t1=$(date +%s.%N)
say "built $IMG ($(du -h "$IMG" | cut -f1), $(wc -l < "$FILES") paths, ${#ORDER[@]} modules)" \
    "and $VMLINUX in $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s"
