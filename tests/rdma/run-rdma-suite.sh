#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# run-rdma-suite.sh - the 'rdma' test suite: real verbs on Soft-RoCE (rdma_rxe)
# inside a qemu VM, since the host kernel has no RDMA. Called by
# tests/run-all.sh; also fine by hand.
#
#   1. vm/install-deps.sh    Debian packages (qemu, stock kernel, rdma-core, ...)
#   2. vm/build-image.sh     the VM initramfs + kernel (cached)
#   3. suite.list            expanded by vm/expand-suite.py: fixed entries
#                            (the smoke test) and "@meson rdma", i.e. every
#                            meson test() in suite 'rdma'; unbuilt ones are
#                            built first with ninja
#   4. vm/run-vm.sh          one VM boot with the source tree and the build
#                            dir at their own absolute paths; vm/suite-runner.sh
#                            runs the entries serially and reports each one
#
# Prints one line per entry and, last, "rdma: N passed, N failed[, N skipped]".
# Writes a meson-style testlog (one JSON object per entry, "result" OK, FAIL,
# SKIP or TIMEOUT) to BUILD_DIR/meson-logs/testlog-rdma.json, so a caller can
# sum it with meson's own testlogs. Exit status 0 only if something passed and
# nothing failed.
#
# Environment:
#   BUILD_DIR            meson build dir (default: build, relative to the repo)
#   KVDEX_VM_BUILD       VM image dir (default: BUILD_DIR/rdma-vm)
#   SKIP_DEPS=1          do not run install-deps.sh
#   KVDEX_RDMA_ISOLATE=1 one VM boot per entry (slower; a test that wrecks rxe
#                        cannot take the next ones down with it)
#   KVDEX_RDMA_FILTER    only entries whose name matches this grep -E pattern
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT" || exit 1
BUILD_DIR=${BUILD_DIR:-build}
mkdir -p "$BUILD_DIR"
BUILD=$(cd "$BUILD_DIR" && pwd)
export KVDEX_VM_BUILD=${KVDEX_VM_BUILD:-$BUILD/rdma-vm}
mkdir -p "$KVDEX_VM_BUILD"
LOGDIR=$BUILD/meson-logs
mkdir -p "$LOGDIR"
TESTLOG=$LOGDIR/testlog-rdma.json

log() { echo "==> rdma: $*"; }
now() { date +%s.%N; }
secs() { awk "BEGIN{printf \"%.1f\", $(now) - $1}"; }
# setup failed: one failed pseudo-test, so the suite cannot pass silently
setup_fail() {
    log "setup failed: $*"
    printf '{"name": "rdma-setup", "result": "FAIL", "duration": 0, "suite": ["rdma"]}\n' > "$TESTLOG"
    echo "rdma: 0 passed, 1 failed"
    exit 1
}

T0=$(now)
if [ "${SKIP_DEPS:-0}" = 1 ]; then
    log "deps: skipped (SKIP_DEPS=1)"
else
    t=$(now)
    "$HERE/vm/install-deps.sh" || setup_fail "install-deps.sh"
    log "deps: $(secs "$t") s"
fi

t=$(now)
"$HERE/vm/build-image.sh" || setup_fail "build-image.sh"
log "image: $(secs "$t") s"

WORK=$(mktemp -d /tmp/kvdex-rdma-suite.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
python3 "$HERE/vm/expand-suite.py" "$HERE/suite.list" "$BUILD" "$WORK/all" > "$WORK/missing" ||
    setup_fail "expand-suite.py"
if grep -q '^MISSING ' "$WORK/missing"; then
    log "building unbuilt rdma test executables: $(sed 's/^MISSING //' "$WORK/missing" | tr '\n' ' ')"
    ninja -C "$BUILD" || setup_fail "ninja -C $BUILD"
fi
if [ -n "${KVDEX_RDMA_FILTER:-}" ]; then
    awk -F'\t' -v re="$KVDEX_RDMA_FILTER" '$1 ~ re' "$WORK/all" > "$WORK/sel"
    mv "$WORK/sel" "$WORK/all"
fi
[ -s "$WORK/all" ] || setup_fail "no entries in suite.list"
log "entries: $(cut -f1 "$WORK/all" | tr '\n' ' ')"

# The source tree without build trees and .git, and the build dir, both at their
# host paths: meson's RUNPATHs ($ORIGIN) and test env paths stay valid.
VMARGS=(-x "$ROOT" -X ./.git -X './build*' -X "./${BUILD#"$ROOT"/}")
[ -f "$BUILD/build.ninja" ] && VMARGS+=(-x "$BUILD")
VMARGS+=(-x "$WORK/boot:/kvdex-suite" -C "$BUILD"
    -e KVDEX_RDMA_DIR="$HERE" -e KVDEX_SOURCE_ROOT="$ROOT" -e KVDEX_BUILD_ROOT="$BUILD")

# boot_vm ENTRIES LOG: run these entries in one VM boot
boot_vm() {
    local tmo
    rm -rf "${WORK:?}/boot"
    mkdir -p "$WORK/boot"
    cp "$1" "$WORK/boot/entries"
    tmo=$(awk -F'\t' '{s += $2} END {print s + 120}' "$1")
    "$HERE/vm/run-vm.sh" -q -t "$tmo" -l "$2" "${VMARGS[@]}" -- \
        sh "$HERE/vm/suite-runner.sh" /kvdex-suite/entries
    local rc=$?
    # the console log is the test output: show it, without the kernel's lines
    tr -d '\r' < "$2" | grep -v '^\[ *[0-9]*\.[0-9]*\] '
    case $rc in
    124) log "VM timed out after ${tmo}s" ;;
    125) log "VM died before reporting a status" ;;
    esac
}

: > "$WORK/results"
if [ "${KVDEX_RDMA_ISOLATE:-0}" = 1 ]; then
    n=0
    while IFS= read -r line; do
        n=$((n + 1))
        printf '%s\n' "$line" > "$WORK/one"
        boot_vm "$WORK/one" "$KVDEX_VM_BUILD/suite-$n.log"
        tr -d '\r' < "$KVDEX_VM_BUILD/suite-$n.log" | grep '^RDMA-TEST ' >> "$WORK/results"
    done < "$WORK/all"
else
    boot_vm "$WORK/all" "$KVDEX_VM_BUILD/suite.log"
    tr -d '\r' < "$KVDEX_VM_BUILD/suite.log" | grep '^RDMA-TEST ' >> "$WORK/results"
fi

# --- tally: an entry without a result line (VM died, timeout) failed ------------------
passed=0
failed=0
skipped=0
: > "$TESTLOG"
while IFS="$(printf '\t')" read -r name _ _; do
    line=$(awk -v n="$name" '$2 == n' "$WORK/results" | tail -1)
    res=$(echo "$line" | awk '{print $3}')
    dur=$(echo "$line" | sed -n 's/.*time=\([0-9.]*\).*/\1/p')
    case $res in
    PASS) passed=$((passed + 1)); mres=OK ;;
    SKIP) skipped=$((skipped + 1)); mres=SKIP ;;
    TIMEOUT) failed=$((failed + 1)); mres=TIMEOUT ;;
    *) failed=$((failed + 1)); mres=FAIL; res=${res:-NO-RESULT} ;;
    esac
    echo "rdma: $name $res${dur:+ (${dur} s)}"
    printf '{"name": "rdma/%s", "result": "%s", "duration": %s, "suite": ["rdma"]}\n' \
        "$name" "$mres" "${dur:-0}" >> "$TESTLOG"
done < "$WORK/all"
log "total wall time $(secs "$T0") s; console log in $KVDEX_VM_BUILD, testlog $TESTLOG"
line="rdma: $passed passed, $failed failed"
[ $skipped -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
