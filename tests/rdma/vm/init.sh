#!/bin/busybox sh
# shellcheck shell=dash disable=SC3045
# SPDX-License-Identifier: Apache-2.0
# /init of the kvdex Soft-RoCE VM (installed by build-image.sh).
#
# Loads the rxe module stack, makes a dummy netdev d0 with two IPv4 addresses
# (a "server" and a "client" address; the VM has no NIC, so no packet can
# leave it), adds rxe0 on d0, then runs /kvdex-vm/cmd.sh (written by run-vm.sh)
# and prints "KVDEX-VM-EXIT=<status>" on the console before powering off.
#
# Kernel command line:
#   kvdexvm.shell=1    interactive shell on the console instead of cmd.sh
#   kvdexvm.nordma=1   skip "rdma link add" (the command sets rxe up itself)
#   kvdexvm.mtu=N      netdev MTU of d0 (default 1500: RoCE active_mtu 1024;
#                      9000 gives 4096)
#
# Environment given to the command:
#   RXE_DEV=rxe0  RXE_NETDEV=d0  RXE_IP / RXE_GID_IDX (first address, its
#   IPv4-mapped RoCE v2 GID index)  RXE_IP2 / RXE_GID_IDX2 (second address)
#   RXE_MTU (active RoCE path MTU in bytes)  KVDEX_IN_VM=1
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# /tmp stays on the initramfs root (already RAM): run-vm.sh may have put
# directories there (-x /tmp/...), which a tmpfs mount would hide
chmod 1777 /tmp
mount -t tmpfs tmpfs /run
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
# verbs pins memory; the default 8 MiB memlock limit is too small for real tests
ulimit -l unlimited
ulimit -c 0

NETDEV=d0
NETMTU=1500
IP1=198.18.0.1
IP2=198.18.0.2

up() { cut -d' ' -f1 /proc/uptime; }
log() { echo "[kvdex-vm $(up)s] $*"; }
finish() {
    echo "KVDEX-VM-EXIT=$1"
    sync
    poweroff -f
    sleep 10
}
fail() {
    log "FATAL: $*"
    dmesg | tail -30
    finish 99
}

SHELL_MODE=0
NORDMA=0
for arg in $(cat /proc/cmdline); do
    case $arg in
    kvdexvm.shell=1) SHELL_MODE=1 ;;
    kvdexvm.nordma=1) NORDMA=1 ;;
    kvdexvm.mtu=*) NETMTU=${arg#kvdexvm.mtu=} ;;
    esac
done
log "init started ($(uname -r))"

# --- modules: modprobe with the image's trimmed modules.dep, insmod as fallback ---
load_modules() {
    modprobe -a dummy configfs crc32_generic rdma_rxe ib_uverbs rdma_ucm 2>/dev/null &&
        modprobe crc32-pclmul 2>/dev/null
    for m in rdma_rxe ib_uverbs rdma_ucm dummy; do
        grep -q "^$m " /proc/modules || return 1
    done
}
if ! load_modules; then
    log "modprobe incomplete, falling back to insmod in dependency order"
    while read -r ko; do
        n=$(basename "$ko" .ko | tr - _)
        grep -q "^$n " /proc/modules || insmod "/lib/modules/$(uname -r)/$ko" ||
            log "insmod $ko failed"
    done < /etc/kvdex-vm-modules
fi
grep -q "^rdma_rxe " /proc/modules || fail "rdma_rxe not loaded"
log "modules loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"

# --- network: one dummy netdev, two addresses ---------------------------------------
ip link set lo up
ip link add $NETDEV type dummy || fail "cannot create dummy netdev"
ip link set $NETDEV mtu "$NETMTU" || fail "cannot set mtu $NETMTU"
ip addr add $IP1/24 dev $NETDEV || fail "cannot add $IP1"
ip addr add $IP2/24 dev $NETDEV || fail "cannot add $IP2"
ip link set $NETDEV up || fail "cannot bring $NETDEV up"

# GID index whose value is the IPv4-mapped address ::ffff:a.b.c.d (RoCE v2).
# rxe has a 1024-entry table; look at the first 16 with the read builtin only
# (each fork costs milliseconds under TCG).
gid_of() {
    # shellcheck disable=SC2086 # $1 word-splits on "." into four printf arguments
    want=$(IFS=.; printf '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' $1)
    n=0
    while [ $n -lt 16 ]; do
        read -r v < /sys/class/infiniband/rxe0/ports/1/gids/$n 2>/dev/null
        if [ "$v" = "$want" ]; then
            echo $n
            return 0
        fi
        n=$((n + 1))
    done
    return 1
}

if [ $NORDMA = 0 ]; then
    rdma link add rxe0 type rxe netdev $NETDEV || fail "rdma link add rxe0 failed"
    G1=""
    G2=""
    i=0
    # the uverbs/rdma_cm nodes and the GID table fill in asynchronously
    while [ $i -lt 200 ]; do
        if [ -e /dev/infiniband/uverbs0 ] && [ -e /dev/infiniband/rdma_cm ]; then
            G1=$(gid_of $IP1)
            G2=$(gid_of $IP2)
            [ -n "$G1" ] && [ -n "$G2" ] && break
        fi
        sleep 0.05
        i=$((i + 1))
    done
    [ -n "$G1" ] && [ -n "$G2" ] || {
        ls -l /dev/infiniband 2>&1
        cat /sys/class/infiniband/rxe0/ports/1/gids/* 2>&1 | head -8
        fail "rxe0 GIDs for $IP1/$IP2 did not appear"
    }
    STATE=$(cat /sys/class/infiniband/rxe0/ports/1/state)
    case $STATE in
    *ACTIVE*) ;;
    *) fail "rxe0 port state is $STATE" ;;
    esac
    # active_mtu is printed as e.g. "1024"
    MTU=$(ibv_devinfo -d rxe0 2>/dev/null | awk '/active_mtu/{print $2; exit}')
    export RXE_DEV=rxe0 RXE_GID_IDX=$G1 RXE_GID_IDX2=$G2 RXE_MTU=$MTU
    log "rxe0 on $NETDEV: $IP1 gid $G1, $IP2 gid $G2, port $STATE, mtu $MTU"
fi
export RXE_NETDEV=$NETDEV RXE_IP=$IP1 RXE_IP2=$IP2 KVDEX_IN_VM=1

if [ $SHELL_MODE = 1 ]; then
    log "interactive shell; exit to power off"
    setsid cttyhack sh -l
    finish $?
fi
[ -x /kvdex-vm/cmd.sh ] || {
    log "no /kvdex-vm/cmd.sh"
    finish 98
}
log "running command"
/kvdex-vm/cmd.sh
rc=$?
log "command exited with status $rc"
if [ $rc -ne 0 ]; then
    echo "----- diagnostics (command failed) -----"
    rdma link 2>&1
    dmesg | grep -iE 'rxe|rdma|infiniband|ib_|oops|bug|warn' | tail -30
fi
finish $rc
