#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The project's test command (README): from a fresh clone on Debian 12, as
# root, install what is missing, configure, build, run every default test
# suite, then the 'rdma' suite on real verbs inside a Soft-RoCE VM
# (tests/rdma/run-rdma-suite.sh: the host kernel has no RDMA), and print
#
#   N passed, N failed[, N skipped]
#
# as the last line, computed from meson's testlog. Exits non-zero if anything
# failed or if no test ran. Idempotent: rerunning reuses the build directory.
#
# Steps are functions listed in STEPS; a later step (e.g. the RDMA VM suite)
# is one more function and one more entry. Each test step appends meson
# testlogs to TESTLOGS so the summary covers them all.
#
# Environment: BUILD_DIR (default build), MESON_TEST_ARGS (extra arguments to
# meson test, e.g. "--suite unit"), SKIP_DEPS=1 to skip the package steps,
# SKIP_RDMA=1 to skip the VM suite (its results then do not count).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-build}
cd "$ROOT"

TESTLOGS=()

log() {
    echo "==> $*"
}

step_deps() {
    if [[ ${SKIP_DEPS:-0} == 1 ]]; then
        log "deps: skipped (SKIP_DEPS=1)"
        return
    fi
    bash deploy/install-deps.sh || return
}

step_configure() {
    if [[ -f "$BUILD_DIR/build.ninja" ]]; then
        log "configure: reconfigure $BUILD_DIR"
        meson setup --reconfigure "$BUILD_DIR" || return
    else
        log "configure: setup $BUILD_DIR"
        rm -rf "$BUILD_DIR"
        meson setup "$BUILD_DIR" || return
    fi
}

step_build() {
    log "build"
    ninja -C "$BUILD_DIR" || return
}

step_meson_test() {
    local rc=0
    local testlog="$BUILD_DIR/meson-logs/testlog.json"

    log "test: meson test (default setup)"
    rm -f "$testlog"
    # shellcheck disable=SC2086
    meson test -C "$BUILD_DIR" --print-errorlogs ${MESON_TEST_ARGS:-} || rc=$?
    if [[ -f "$testlog" ]]; then
        cp "$testlog" "$BUILD_DIR/meson-logs/testlog-default.json"
        TESTLOGS+=("$BUILD_DIR/meson-logs/testlog-default.json")
    fi
    log "test: meson test exited $rc"
    # 0: all passed, 1: some failed (counted from the testlog); anything
    # else means meson itself failed and the log may be incomplete.
    [[ $rc -le 1 ]]
}

# Steps run from an `if`, where errexit does not apply: each one returns
# non-zero itself (`|| return`) when something it needs fails. A test step
# returns 0 when the tests ran, whatever their results, and appends its
# testlog to TESTLOGS.
step_rdma_vm() {
    local testlog="$BUILD_DIR/meson-logs/testlog-rdma.json"

    if [[ ${SKIP_RDMA:-0} == 1 ]]; then
        log "test: rdma suite skipped (SKIP_RDMA=1)"
        return
    fi
    log "test: rdma suite in the Soft-RoCE VM"
    rm -f "$testlog"
    BUILD_DIR=$BUILD_DIR bash tests/rdma/run-rdma-suite.sh || true
    # The suite writes a meson-style testlog (a failed setup included), so
    # its results count in the summary like meson's own.
    if [[ ! -f "$testlog" ]]; then
        echo "run-all: the rdma suite wrote no testlog" >&2
        return 1
    fi
    TESTLOGS+=("$testlog")
}

STEPS=(
    step_deps
    step_configure
    step_build
    step_meson_test
    step_rdma_vm
)

# Count results over every testlog (one JSON object per line per test).
summarise() {
    python3 - "$@" <<'PY'
import json, sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line).get("result", "")
            except ValueError:
                r = "ERROR"  # a truncated log: meson itself failed
            if r in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif r == "SKIP":
                skipped += 1
            else:  # FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS, anything unknown
                failed += 1
s = f"{passed} passed, {failed} failed"
if skipped:
    s += f", {skipped} skipped"
print(s)
sys.exit(1 if failed or passed + failed == 0 else 0)
PY
}

main() {
    local failed_step=""

    for s in "${STEPS[@]}"; do
        if ! "$s"; then
            failed_step=$s
            echo "run-all: $s failed" >&2
            break
        fi
    done
    if [[ ${#TESTLOGS[@]} -eq 0 ]]; then
        echo "0 passed, 0 failed"
        exit 1
    fi
    summarise "${TESTLOGS[@]}" || exit 1
    [[ -z $failed_step ]]
}

main "$@"
