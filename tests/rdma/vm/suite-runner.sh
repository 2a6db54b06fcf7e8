#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# suite-runner.sh - run the rdma suite's entries one after the other INSIDE
# the VM (run-rdma-suite.sh generates the entry file and boots the VM).
#
# Usage: suite-runner.sh ENTRIES
#   ENTRIES: one entry a line, "NAME<TAB>TIMEOUT<TAB>SH COMMAND"
# Each entry runs under "timeout TIMEOUT sh -c COMMAND". Exit status 0 is a
# pass, 77 a skip (meson's convention), anything else a failure; 143/137 mean
# the timeout hit. After each entry one line goes to the console:
#   RDMA-TEST <NAME> PASS|FAIL|SKIP|TIMEOUT status=<N> time=<S>
# which run-rdma-suite.sh parses. Entries run serially on purpose: rxe drops
# completions when many QPs from concurrent tests drive it.
# Exit status: the number of failed entries (at most 100).
[ -r "$1" ] || { echo "usage: $0 ENTRIES" >&2; exit 2; }
now() { cut -d' ' -f1 /proc/uptime; }
TAB=$(printf '\t')
failed=0
exec 3< "$1"
while IFS="$TAB" read -r name tmo cmd <&3; do
    [ -n "$name" ] || continue
    echo "===== rdma-test $name (timeout ${tmo}s): $cmd"
    t0=$(now)
    timeout "$tmo" sh -c "$cmd" < /dev/null
    st=$?
    dt=$(awk "BEGIN{printf \"%.2f\", $(now) - $t0}")
    case $st in
    0) res=PASS ;;
    77) res=SKIP ;;
    124 | 137 | 143) res=TIMEOUT ;;
    *) res=FAIL ;;
    esac
    case $res in FAIL | TIMEOUT) failed=$((failed + 1)) ;; esac
    # rxe must still be up for the next entry; say so if a test broke it
    grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state 2>/dev/null ||
        echo "rdma-test: warning: rxe0 port not ACTIVE after $name"
    echo "RDMA-TEST $name $res status=$st time=$dt"
done
exec 3<&-
[ $failed -gt 100 ] && failed=100
exit $failed
