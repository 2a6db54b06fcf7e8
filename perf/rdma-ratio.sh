#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# rdma-ratio.sh - kvdex verbs lookups against perftest's raw RDMA READ, in one boot.
#
# Runs INSIDE the Soft-RoCE VM (tests/rdma/vm/run-vm.sh sets RXE_*), from the
# host as
#     tests/rdma/vm/run-vm.sh -x build -x perf -t 900 -- rdma-ratio.sh
# (-x perf puts this script on the VM's PATH; the working directory is the
# first -x, the build dir, where perf/kvdex-bench lives).
#
# Soft-RoCE is software under TCG: absolute latencies say nothing about a
# NIC, so everything here is a ratio within this one boot. Steps:
#   1. ib_read_lat, one RC READ of 512 bytes (a bucket, kvdex's default
#      bucket size) and of 2 bytes; t_typical (perftest's median) in us;
#      ib_read_bw 512 B for rxe's per-READ cost when READs are pipelined.
#   2. kvdex-bench lookup over verbs, 1- and 32-block lookups (p50).
#   3. kvdex-bench lookup over verbs, exactly RATIO_LOOKUPS 1-block lookups,
#      with kvdexd's CPU time (all threads, schedstat) before and after.
#   4. ib_read_lat 512 B again: the drift of the reference over the run.
# Prints a table of ratios (lookup p50 / READ t_typical, against the mean of
# the two 512-byte figures) and the server CPU figures; exits 0 when every
# measurement was taken (whether the targets are met is printed, not judged),
# 1 otherwise.
#
# Pairs (server in the background, client in the foreground, both under a
# timeout) restart on a connection-setup failure, like tests/rdma/vm/smoke.sh:
# under a loaded host, rdma_cm on rxe sometimes rejects a first connect.
#
# Environment: KVDEX_BENCH (default ./perf/kvdex-bench, else next to this
# script's ../build), RATIO_ITERS (ib_read_lat iterations, 5000),
# RATIO_BLOCKS (100000), RATIO_DURATION_MS (per cell, 5000), RATIO_LOOKUPS
# (100000), RATIO_TIMEOUT (per perftest process, s, 120).
DEV=${RXE_DEV:-rxe0}
IP=${RXE_IP:-198.18.0.1}
IP2=${RXE_IP2:-$IP}
G=${RXE_GID_IDX:-1}
G2=${RXE_GID_IDX2:-$G}
ITERS=${RATIO_ITERS:-5000}
BLOCKS=${RATIO_BLOCKS:-100000}
DUR=${RATIO_DURATION_MS:-5000}
NLOOKUPS=${RATIO_LOOKUPS:-100000}
TMO=${RATIO_TIMEOUT:-120}
OUT=${TMPDIR:-/tmp}/rdma-ratio.$$
mkdir -p "$OUT"
trap 'rm -rf "$OUT"' EXIT

BENCH=${KVDEX_BENCH:-}
if [ -z "$BENCH" ]; then
    for b in ./perf/kvdex-bench "$(dirname "$0")/../build/perf/kvdex-bench"; do
        [ -x "$b" ] && BENCH=$b && break
    done
fi
[ -x "$BENCH" ] || {
    echo "rdma-ratio: kvdex-bench not found (set KVDEX_BENCH)" >&2
    exit 1
}

now() { cut -d' ' -f1 /proc/uptime; }
say() { echo "rdma-ratio: $*"; }
fail() {
    say "FAIL: $*"
    exit 1
}

# ---- perftest pairs (the pattern of tests/rdma/vm/smoke.sh) -------------------------

listening() { # PORT: an rdma_cm listener or a TCP socket (perftest's exchange)
    rdma res show cm_id 2>/dev/null | grep -q "state LISTEN .*:$1 " && return 0
    netstat -ltn 2>/dev/null | grep -q ":$1 "
}

connect_failed() {
    grep -qiE "REJECTED|couldn't connect|unable to connect|connection refused|UNREACHABLE|ADDR_ERROR|ROUTE_ERROR" "$1"
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
    if [ $crc -ne 0 ] && connect_failed "$OUT/$1.cli"; then
        kill $spid 2>/dev/null
    fi
    wait $spid
    src=$?
}

# pair NAME PORT "SERVER CMD" "CLIENT CMD": up to 3 tries; 0 when both ends exit 0
pair() {
    try=1
    while :; do
        start_pair "$1" "$2" "$3" "$4"
        if [ $crc -ne 0 ] && [ $try -lt 3 ] && connect_failed "$OUT/$1.cli"; then
            say "$1: connection setup failed (try $try), restarting the pair"
            try=$((try + 1))
            sleep 1
            continue
        fi
        break
    done
    if [ "$crc" -ne 0 ] || [ "$src" -ne 0 ]; then
        echo "----- $1 server: $3 (status $src)"
        cat "$OUT/$1.srv"
        echo "----- $1 client: $4 (status $crc)"
        cat "$OUT/$1.cli"
        return 1
    fi
    return 0
}

# read_lat NAME BYTES: ib_read_lat, GID addressed; prints its result line and
# sets lat_typ (t_typical, us: perftest's median)
read_lat() {
    pair "$1" 18515 \
        "ib_read_lat -d $DEV -x $G -s $2 -n $ITERS -F" \
        "ib_read_lat -d $DEV -x $G2 -s $2 -n $ITERS -F $IP" || fail "ib_read_lat $2 B"
    # #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%
    line=$(grep -E "^ *$2 +[0-9]+ +[0-9.]+" "$OUT/$1.cli" | tail -1)
    [ -n "$line" ] || {
        cat "$OUT/$1.cli"
        fail "no result line from ib_read_lat $2 B"
    }
    echo "$line" | tr -s ' \t' ' ' | sed 's/^ */    /'
    lat_typ=$(echo "$line" | awk '{print $5}')
}

# read_bw BYTES: ib_read_bw with perftest's default queue depths; sets bw_mpps
read_bw() {
    pair read_bw 18515 \
        "ib_read_bw -d $DEV -x $G -s $1 -n $((ITERS * 4)) -F" \
        "ib_read_bw -d $DEV -x $G2 -s $1 -n $((ITERS * 4)) -F $IP" || fail "ib_read_bw $1 B"
    # #bytes #iterations BW_peak BW_average MsgRate[Mpps]
    line=$(grep -E "^ *$1 +[0-9]+ +[0-9.]+" "$OUT/read_bw.cli" | tail -1)
    [ -n "$line" ] || {
        cat "$OUT/read_bw.cli"
        fail "no result line from ib_read_bw $1 B"
    }
    echo "$line" | tr -s ' \t' ' ' | sed 's/^ */    /'
    bw_mpps=$(echo "$line" | awk '{print $5}')
}

# ---- the run --------------------------------------------------------------------------

T0=$(now)
say "device $DEV, server $IP (gid $G), client $IP2 (gid $G2), $(grep -c ^processor /proc/cpuinfo) CPUs"
say "kvdex-bench: $BENCH"
HDR="#bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9% (us)"

say "1. raw RDMA READ (perftest ib_read_lat, $ITERS iterations)"
echo "    $HDR"
read_lat read_lat_512a 512
typ512a=$lat_typ
read_lat read_lat_2 2
typ2=$lat_typ
say "   pipelined READs (ib_read_bw, 512 B, perftest's default depth)"
echo "    #bytes #iterations BW_peak[MB/s] BW_average[MB/s] MsgRate[Mpps]"
read_bw 512

say "2. kvdex lookups over verbs (p50 of ${DUR} ms per cell)"
"$BENCH" lookup --transports verbs --listen-rdma "$IP:0" --chains 1,32 --blocks "$BLOCKS" \
    --duration-ms "$DUR" > "$OUT/lookup.out" 2>&1
st=$?
sed 's/^/    /' "$OUT/lookup.out"
[ $st -eq 0 ] || fail "kvdex-bench lookup (chains 1,32) exited $st"

say "3. server CPU over exactly $NLOOKUPS 1-block verbs lookups"
# the guest's softirq time (rxe's responder runs there): /proc/stat's cpu line
# in USER_HZ ticks, field 8
sirq0=$(awk '$1 == "cpu" {print $8; exit}' /proc/stat)
"$BENCH" lookup --transports verbs --listen-rdma "$IP:0" --chains 1 --blocks "$BLOCKS" \
    --lookups "$NLOOKUPS" > "$OUT/cpu.out" 2>&1
st=$?
sed 's/^/    /' "$OUT/cpu.out"
[ $st -eq 0 ] || fail "kvdex-bench lookup --lookups $NLOOKUPS exited $st"
sirq1=$(awk '$1 == "cpu" {print $8; exit}' /proc/stat)

say "4. raw RDMA READ again (drift of the reference)"
echo "    $HDR"
read_lat read_lat_512b 512
typ512b=$lat_typ

# ---- the figures ----------------------------------------------------------------------

# cell TRANSPORT CHAIN FILE FIELD: a column of a results row (6 = p50_us)
cell() {
    awk -v t="$1" -v c="$2" -v f="$4" '$1 == t && $2 == c && NF >= 17 {print $f; exit}' "$3"
}
p50_1=$(cell verbs 1 "$OUT/lookup.out" 6)
p50_32=$(cell verbs 32 "$OUT/lookup.out" 6)
rt_32=$(cell verbs 32 "$OUT/lookup.out" 11)
p50_1b=$(cell verbs 1 "$OUT/cpu.out" 6)
n_cpu=$(cell verbs 1 "$OUT/cpu.out" 3)
[ -n "$p50_1" ] && [ -n "$p50_32" ] && [ -n "$p50_1b" ] || fail "no verbs rows in the kvdex-bench output"
idle=$(grep '^server cpu: idle ' "$OUT/cpu.out")
busy=$(grep '^server cpu: verbs  *1 ' "$OUT/cpu.out")
[ -n "$idle" ] && [ -n "$busy" ] || fail "no server cpu lines in the kvdex-bench output"

echo
say "ratios (same boot; reference: ib_read_lat 512 B t_typical, mean of steps 1 and 4)"
awk -v a="$typ512a" -v b="$typ512b" -v t2="$typ2" -v l1="$p50_1" -v l32="$p50_32" \
    -v l1b="$p50_1b" -v rt32="$rt_32" -v mpps="$bw_mpps" -v n="$n_cpu" 'BEGIN {
    ref = (a + b) / 2
    printf "    raw READ 512 B t_typical: %.2f us (step 1) / %.2f us (step 4), reference %.2f us; 2 B: %.2f us\n", a, b, ref, t2
    printf "    rxe pipelined READ rate (512 B): %.4f Mpps = %.2f us per READ\n", mpps, (mpps > 0 ? 1 / mpps : 0)
    printf "    %-40s %10s %10s %8s  %s\n", "", "p50_us", "ratio", "target", "verdict"
    printf "    %-40s %10.2f %10.2fx %7.1fx  %s\n", "1-block lookup / one READ", l1, l1 / ref, 1.3, (l1 / ref <= 1.3 ? "met" : "NOT met")
    printf "    %-40s %10.2f %10.2fx %7.1fx  %s\n", "32-block lookup / one READ", l32, l32 / ref, 2.0, (l32 / ref <= 2.0 ? "met" : "NOT met")
    printf "    %-40s %10.2f %10.2fx\n", "1-block lookup (step 3, " n " lookups)", l1b, l1b / ref
    # a 32-block lookup is 33 READs (header + 32 buckets) in one batch
    if (mpps > 0)
        printf "    rxe floor for 33 pipelined READs: %.2f us + 32 x %.2f us = %.2f us (%.2fx a READ); lookup %.2fx that; %s round trips per 32-block lookup\n", ref, 1 / mpps, ref + 32 / mpps, (ref + 32 / mpps) / ref, l32 / (ref + 32 / mpps), rt32
}'
echo
say "server CPU (kvdexd, all threads, /proc/<pid>/task/*/schedstat; step 3)"
echo "$idle" | sed 's/^server cpu: /    /'
echo "$busy" | sed 's/^server cpu: /    /'
printf '%s\n%s\n' "$idle" "$busy" | awk -v n="$n_cpu" -v sirq="$((sirq1 - sirq0))" '{
    # "... lookups in W ms: before B, after A, used U (...), S timeslices (...)"
    for (i = 1; i <= NF; i++) {
        if ($i == "in") w[NR] = $(i + 1)
        if ($i == "before") b[NR] = $(i + 1) + 0
        if ($i == "after") a[NR] = $(i + 1) + 0
        if ($i == "used") u[NR] = $(i + 1)
        if ($i == "timeslices") sl[NR] = $(i - 1)
    }
} END {
    # (parentheses: a bare ">" in a printf argument list is a redirection)
    rate = w[1] > 0 ? u[1] / w[1] : 0
    srate = w[1] > 0 ? sl[1] / w[1] : 0
    printf "    %d lookups: server CPU before %.3f ms, after %.3f ms: %.3f ms = %.3f us per lookup\n", n, b[2], a[2], u[2], (n > 0 ? u[2] * 1000 / n : 0)
    printf "    idle rate %.3f ms/s and %.1f timeslices/s; during the lookups %.3f ms/s and %.1f timeslices/s\n", rate * 1000, srate * 1000, (w[2] > 0 ? u[2] / w[2] * 1000 : 0), (w[2] > 0 ? sl[2] / w[2] * 1000 : 0)
    printf "    guest softirq time over step 3 (all CPUs, /proc/stat): %.2f s\n", sirq / 100
    printf "    beyond the idle rate: %.3f ms CPU (%.4f us per lookup), %.0f timeslices (%.5f per lookup)\n", u[2] - rate * w[2], (n > 0 ? (u[2] - rate * w[2]) * 1000 / n : 0), sl[2] - srate * w[2], (n > 0 ? (sl[2] - srate * w[2]) / n : 0)
}'
say "total $(awk "BEGIN{printf \"%.1f\", $(now) - $T0}") s"
exit 0
