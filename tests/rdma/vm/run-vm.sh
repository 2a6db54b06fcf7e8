#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# run-vm.sh - boot the kvdex Soft-RoCE VM under qemu and run one command in it.
#
# Usage: run-vm.sh [options] -- COMMAND...
#   -x DIR[:DEST]  copy DIR into the VM at DEST (default: the same absolute
#                  path, so meson's RUNPATHs and KVDEX_* paths keep working);
#                  repeatable. Object dirs (*.p), meson-private/-logs/-info and
#                  the VM build dir are left out. Shared libraries of the ELF
#                  files that are neither in the image nor under a -x DIR are
#                  resolved with ldd on the host and added.
#   -X PATTERN     also leave out paths matching PATTERN (tar --exclude); repeatable
#   -e VAR=VALUE   environment for COMMAND; repeatable
#   -C DIR         working directory of COMMAND (default: first -x DEST, else /)
#   -t SECS        timeout for the whole VM run (default 300) -> exit 124
#   -l LOG         console log file (default: <vm build dir>/last-run.log)
#   -m MEM         guest memory (default 2G)
#   -s SMP         guest CPUs (default 2)
#   -M MTU         MTU of the guest's dummy netdev (default 1500 -> RoCE 1024)
#   -a ACCEL       tcg (default) | kvm | auto (kvm only if the CPU shows vmx/svm)
#   -Z             boot the compressed /boot/vmlinuz instead of the PVH vmlinux
#   -S             interactive shell on the console instead of COMMAND
#   -q             do not stream the console to stdout (still logged)
# COMMAND: one argument is a shell snippet, several are an argv; it runs
# under busybox sh as root with RXE_DEV, RXE_GID_IDX, RXE_IP, RXE_IP2,
# RXE_GID_IDX2, RXE_NETDEV, RXE_MTU and KVDEX_IN_VM=1 set, and each -x DEST
# prepended to PATH.
# Exit status: COMMAND's; 124 on timeout; 125 if the VM died without
# reporting one; 2 on bad usage; 1 if the image cannot be built.
# The VM has no network device except the in-guest dummy d0 (qemu -nic none).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
OUTDIR=${KVDEX_VM_BUILD:-${MESON_BUILD_ROOT:+$MESON_BUILD_ROOT/rdma-vm}}
OUTDIR=${OUTDIR:-$REPO/build/rdma-vm}
export KVDEX_VM_BUILD=$OUTDIR

XDIRS=()
XEXCL=()
ENVS=()
CWD=""
TMO=300
LOG=""
MEM=2G
SMP=2
NETMTU=""
ACCEL=tcg
PVH=1
SHELL_MODE=0
QUIET=0
while getopts "x:X:e:C:t:l:m:s:M:a:ZSqh" opt; do
    case $opt in
    x) XDIRS+=("$OPTARG") ;;
    X) XEXCL+=(--exclude="$OPTARG") ;;
    e) ENVS+=("$OPTARG") ;;
    C) CWD=$OPTARG ;;
    t) TMO=$OPTARG ;;
    l) LOG=$OPTARG ;;
    m) MEM=$OPTARG ;;
    s) SMP=$OPTARG ;;
    M) NETMTU=$OPTARG ;;
    a) ACCEL=$OPTARG ;;
    Z) PVH=0 ;;
    S) SHELL_MODE=1 ;;
    q) QUIET=1 ;;
    h) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || [ $SHELL_MODE = 1 ] || { echo "usage: $0 [options] -- COMMAND..." >&2; exit 2; }

say() { echo "[run-vm] $*" >&2; }

"$HERE/build-image.sh" -q || exit 1
KVER=$(ls -1 "$OUTDIR"/image-*.key 2>/dev/null | sed 's|.*/image-||; s|\.key$||' | sort -V | tail -1)
[ -n "$KVER" ] || { say "no image in $OUTDIR"; exit 1; }
BASE=$OUTDIR/initramfs-$KVER.cpio
KERNEL=/boot/vmlinuz-$KVER
[ $PVH = 1 ] && KERNEL=$OUTDIR/vmlinux-$KVER
[ -n "$LOG" ] || LOG=$OUTDIR/last-run.log

WORK=$(mktemp -d /tmp/kvdex-vm-run.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ST=$WORK/overlay
mkdir -p "$ST/kvdex-vm"

# --- per-run overlay: the -x trees, the libraries they need, the command -----------
declare -A INIMG
while IFS= read -r p; do INIMG[$p]=1; done < "$OUTDIR/initramfs-$KVER.files"

canon() {
    case $1 in
    /lib/* | /bin/* | /sbin/* | /lib64/*) echo "/usr$1" ;;
    *) echo "$1" ;;
    esac
}
under_x() { # is host path $1 inside one of the -x source trees?
    local x src
    for x in "${XDIRS[@]}"; do
        src=$(readlink -f "${x%%:*}")
        case $1 in "$src"/*) return 0 ;; esac
    done
    return 1
}

PATHS=""
for x in "${XDIRS[@]}"; do
    src=${x%%:*}
    dest=${x#*:}
    [ "$dest" = "$x" ] && dest=$(readlink -f "$src")
    [ -d "$src" ] || { say "-x $src: not a directory"; exit 2; }
    src=$(readlink -f "$src")
    [ -n "$CWD" ] || CWD=$dest
    PATHS="$PATHS$dest:"
    excl=(--exclude='*.p' --exclude=./meson-private --exclude=./meson-logs
        --exclude=./meson-info --exclude='.ninja_*' --exclude='*.o' "${XEXCL[@]}")
    case $OUTDIR/ in "$src"/*) excl+=(--exclude="./${OUTDIR#"$src"/}") ;; esac
    mkdir -p "$ST$dest"
    tar -C "$src" "${excl[@]}" -cf - . | tar -C "$ST$dest" -xf - || { say "copy of $src failed"; exit 1; }
done

# libraries: ldd every ELF in the overlay (it still resolves against the host)
find "$ST" -type f \( -perm -u+x -o -name '*.so*' \) -print0 2>/dev/null |
    while IFS= read -r -d '' f; do
        [ "$(head -c4 "$f" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || continue
        # ldd must see the file where the host has it, for $ORIGIN RUNPATHs
        host=${f#"$ST"}
        for x in "${XDIRS[@]}"; do
            src=$(readlink -f "${x%%:*}")
            dest=${x#*:}
            [ "$dest" = "$x" ] && dest=$src
            case $host in "$dest"/*) host=$src/${host#"$dest"/} ;; esac
        done
        [ -e "$host" ] || host=$f
        ldd "$host" 2>/dev/null | awk '/=> \//{print $3} /=> not found/{print "MISSING " $1}'
    done | sort -u > "$WORK/libs"
grep '^MISSING ' "$WORK/libs" | while read -r _ lib; do say "warning: ldd: $lib not found"; done
grep -v '^MISSING ' "$WORK/libs" | while read -r lib; do
    real=$(readlink -f "$lib")
    under_x "$real" && continue
    want=$(canon "$lib")
    dst=$(canon "$real")
    [ -n "${INIMG[$want]:-}" ] && continue
    if [ -z "${INIMG[$dst]:-}" ] && [ ! -e "$ST$dst" ]; then
        mkdir -p "$ST$(dirname "$dst")"
        cp "$real" "$ST$dst"
        echo "$dst" >> "$WORK/added"
    fi
    if [ "$want" != "$dst" ] && [ ! -e "$ST$want" ]; then
        mkdir -p "$ST$(dirname "$want")"
        ln -s "$dst" "$ST$want"
    fi
done
[ -s "$WORK/added" ] && say "added libraries: $(xargs -n1 basename < "$WORK/added" | tr '\n' ' ')"

{
    echo '#!/bin/sh'
    echo "export PATH=${PATHS}\$PATH"
    for e in "${ENVS[@]}"; do
        printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
    done
    printf 'cd %q || exit 97\n' "${CWD:-/}"
    if [ $# -eq 1 ]; then
        printf '%s\n' "$1"
    elif [ $# -gt 1 ]; then
        printf '%q ' "$@"
        echo
    fi
} > "$ST/kvdex-vm/cmd.sh"
chmod 755 "$ST/kvdex-vm/cmd.sh"

# The kernel unpacks concatenated archives in order (later files win); the
# overlay stays uncompressed: gunzip under TCG costs more than the copy.
(cd "$ST" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$WORK/overlay.cpio"
# An uncompressed archive must start 4-byte aligned (the kernel skips NUL padding).
{
    cat "$BASE"
    head -c $(((4 - $(stat -c %s "$BASE") % 4) % 4)) /dev/zero
    cat "$WORK/overlay.cpio"
} > "$WORK/initrd"

# --- qemu ---------------------------------------------------------------------------
if [ "$ACCEL" = auto ]; then
    # /dev/kvm alone is not enough: a nested software hypervisor may offer it
    # without vmx/svm, and the stock kernel does not boot there
    if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case $ACCEL in
kvm) ACC=(-accel kvm -cpu host) ;;
tcg) ACC=(-accel "tcg,thread=multi" -cpu max) ;;
*) say "bad -a $ACCEL"; exit 2 ;;
esac
APPEND="console=ttyS0 quiet panic=-1 oops=panic"
[ $SHELL_MODE = 1 ] && APPEND="$APPEND kvdexvm.shell=1"
[ -n "$NETMTU" ] && APPEND="$APPEND kvdexvm.mtu=$NETMTU"
QEMU=(qemu-system-x86_64 "${ACC[@]}" -machine q35 -m "$MEM" -smp "$SMP"
    -nodefaults -no-user-config -display none -nic none -no-reboot
    -serial stdio -kernel "$KERNEL" -initrd "$WORK/initrd" -append "$APPEND")

if [ $SHELL_MODE = 1 ]; then
    "${QEMU[@]}"
    exit $?
fi
mkdir -p "$(dirname "$LOG")"
say "booting $KVER ($ACCEL, -smp $SMP, -m $MEM, initrd $(du -h "$WORK/initrd" | cut -f1), timeout ${TMO}s)"
t0=$(date +%s.%N)
if [ $QUIET = 1 ]; then
    timeout --kill-after=10 "$TMO" "${QEMU[@]}" < /dev/null > "$LOG" 2>&1
    qrc=$?
else
    timeout --kill-after=10 "$TMO" "${QEMU[@]}" < /dev/null 2>&1 | tee "$LOG"
    qrc=${PIPESTATUS[0]}
fi
t1=$(date +%s.%N)
say "qemu ran $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s (qemu status $qrc), log $LOG"
if [ $qrc = 124 ] || [ $qrc = 137 ]; then
    say "TIMEOUT after ${TMO}s"
    exit 124
fi
rc=$(tr -d '\r' < "$LOG" | sed -n 's/^KVDEX-VM-EXIT=\([0-9][0-9]*\)$/\1/p' | tail -1)
[ -n "$rc" ] || { say "the VM ended without reporting an exit status"; exit 125; }
exit "$rc"
