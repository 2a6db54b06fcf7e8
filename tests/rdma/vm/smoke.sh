#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# smoke.sh - Soft-RoCE smoke test, run INSIDE the VM (run-vm.sh sets RXE_*).
#
# Checks that rxe0 is usable for what kvdex needs: device and port state,
# atomics (one-sided CAS), rdma_cm connection setup (rping, ucmatose) and raw
# verbs RC READ/WRITE/atomic traffic (perftest, GID-addressed and via rdma_cm).
# Servers bind RXE_IP, clients use RXE_IP2 where the tool lets us choose, so
# the two ends have distinct addresses and GIDs.
# Each pair: server in the background, wait until it listens, client in the
# foreground, both under a timeout; a failed connection setup restarts the
# pair. Prints one "smoke: NAME ok|FAIL" line per
# check and exits with the number of failed checks.
DEV=${RXE_DEV:-rxe0}
IP=${RXE_IP:-198.18.0.1}
IP2=${RXE_IP2:-$IP}
G=${RXE_GID_IDX:-1}
G2=${RXE_GID_IDX2:-$G}
TMO=${SMOKE_TIMEOUT:-60}
ITERS=${SMOKE_ITERS:-1000}
OUT=${TMPDIR:-/tmp}/smoke.$$
mkdir -p "$OUT"
fails=0
checks=0

now() { cut -d' ' -f1 /proc/uptime; }
since() { awk "BEGIN{printf \"%.2f\", $(now) - $1}"; }
result() { # NAME STATUS T0 [NOTE]
    checks=$((checks + 1))
    if [ "$2" = 0 ]; then
        echo "smoke: $1 ok ($(since "$3") s)${4:+ $4}"
    else
        fails=$((fails + 1))
        echo "smoke: $1 FAIL ($(since "$3") s)${4:+ $4}"
    fi
}

# is something listening on PORT, as an rdma_cm id or a TCP socket?
listening() {
    rdma res show cm_id 2>/dev/null | grep -q "state LISTEN .*:$1 " && return 0
    netstat -ltn 2>/dev/null | grep -q ":$1 "
}

# start_pair NAME PORT "SERVER CMD" "CLIENT CMD": one attempt; sets crc, src
start_pair() {
    timeout "$TMO" sh -c "$3" > "$OUT/$1.srv" 2>&1 &
    spid=$!
    i=0
    while ! listening "$2"; do
        i=$((i + 1))
        if [ $i -gt 200 ] || ! kill -0 $spid 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    timeout "$TMO" sh -c "$4" > "$OUT/$1.cli" 2>&1
    crc=$?
    # a client that never connected leaves its server waiting: end it
    if [ $crc -ne 0 ] && connect_failed "$OUT/$1.cli"; then
        kill $spid 2>/dev/null
    fi
    wait $spid
    src=$?
}

# did connection setup fail (as opposed to the data transfer)?
connect_failed() {
    grep -qiE "REJECTED|couldn't connect|unable to connect|connection refused|UNREACHABLE|ADDR_ERROR|ROUTE_ERROR" "$1"
}

# pair NAME PORT "SERVER CMD" "CLIENT CMD" [grep -E pattern of a result line]
# Under a loaded host, TCG can starve the guest long enough for rdma_cm's
# timers to fire: the client then sees a REJECT (reason 8, invalid service
# ID) although the server listens, and a second connect to the same server
# can hang. So a connection-setup failure restarts the whole pair (3 tries).
pair() {
    name=$1
    t0=$(now)
    try=1
    while :; do
        start_pair "$1" "$2" "$3" "$4"
        if [ $crc -ne 0 ] && [ $try -lt 3 ] && connect_failed "$OUT/$name.cli"; then
            echo "smoke: $name: connection setup failed (try $try), restarting the pair"
            sed 's/^/    | /' "$OUT/$name.cli" | tail -5
            try=$((try + 1))
            sleep 1
            continue
        fi
        break
    done
    note=""
    [ -n "${5:-}" ] && note=$(grep -E "$5" "$OUT/$name.cli" | tail -1 | tr -s ' \t' ' ')
    [ $try -gt 1 ] && note="$note (try $try)"
    if [ $crc -ne 0 ] || [ $src -ne 0 ]; then
        echo "----- $name server: $3 (status $src)"
        cat "$OUT/$name.srv"
        echo "----- $name client: $4 (status $crc)"
        cat "$OUT/$name.cli"
        result "$name" 1 "$t0" "client $crc server $src"
    else
        result "$name" 0 "$t0" "$note"
    fi
}

T0=$(now)
echo "smoke: device $DEV, server $IP (gid $G), client $IP2 (gid $G2)"

t0=$(now)
ibv_devinfo -v -d "$DEV" > "$OUT/devinfo" 2>&1
st=$?
grep -q "PORT_ACTIVE" "$OUT/devinfo" || st=1
result devinfo $st "$t0" "$(grep -E 'active_mtu' "$OUT/devinfo" | tr -s '\t ' ' ')"
t0=$(now)
grep -q "atomic_cap:.*ATOMIC_HCA" "$OUT/devinfo"
result atomic_cap $? "$t0" "$(grep -o 'atomic_cap:.*' "$OUT/devinfo" | tr -s ' \t' ' ')"

# rdma_cm + SEND/RDMA READ/WRITE, ping-pong with data verification (-v)
pair rping 7174 \
    "rping -s -a $IP -C 10 -S 64" \
    "rping -c -a $IP -I $IP2 -C 10 -S 64 -V"
# rdma_cm with several connections at once, SEND/RECV
pair ucmatose 7471 \
    "ucmatose -b $IP -c 2 -C 20" \
    "ucmatose -s $IP -b $IP2 -c 2 -C 20"
LAT='^ *[0-9]+ +[0-9]+ +[0-9.]+'
# raw verbs, GID addressed (TCP out-of-band exchange on 18515)
pair ib_read_lat 18515 \
    "ib_read_lat -d $DEV -x $G -n $ITERS" \
    "ib_read_lat -d $DEV -x $G2 -n $ITERS $IP" "$LAT"
pair ib_write_lat 18515 \
    "ib_write_lat -d $DEV -x $G -n $ITERS" \
    "ib_write_lat -d $DEV -x $G2 -n $ITERS $IP" "$LAT"
# remote atomics: kvdex's one-sided CAS path
pair ib_atomic_lat_cas 18515 \
    "ib_atomic_lat -d $DEV -x $G -A CMP_AND_SWAP -n $ITERS" \
    "ib_atomic_lat -d $DEV -x $G2 -A CMP_AND_SWAP -n $ITERS $IP" "$LAT"
# connection set up through rdma_cm (-R) instead of GIDs
pair ib_read_lat_rdmacm 18515 \
    "ib_read_lat -d $DEV -R -n $ITERS" \
    "ib_read_lat -d $DEV -R -n $ITERS $IP" "$LAT"

echo "smoke: $((checks - fails)) of $checks checks ok, total $(since "$T0") s"
rm -rf "$OUT"
[ $fails -eq 0 ]
