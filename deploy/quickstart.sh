#!/usr/bin/env bash
# kvdex quick start (README command 1), from a fresh clone on Debian 12 as root:
#   1. install the build dependencies (deploy/install-deps.sh),
#   2. configure (or reuse) build/ and build everything with ninja,
#   3. start a local kvdexd on a unix socket in a temp directory (+ tcp on
#      127.0.0.1, kernel-chosen port) and wait for its ready file,
#   4. run the demo workload through libkvdex over the local transport
#      (unix: address -> shm: lookups read the index through a shared mapping),
#   5. stop the server with SIGTERM and check it exits cleanly.
# The server is stopped on every exit path (trap). Exit status 0 only if every
# step succeeded. Set KVDEX_SKIP_DEPS=1 to skip step 1 on a prepared machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
tmp=
server_pid=

say() { printf '\n==> %s\n' "$*"; }
fail() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

# Stop the server (SIGTERM, then wait up to 15 s) and report how it ended.
# Returns 0 only for a clean exit 0.
stop_server() {
	local pid=$server_pid status=0
	[[ -n $pid ]] || return 0
	server_pid=
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "quickstart: kvdexd ignored SIGTERM; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" || status=$?
	if [[ $status -ne 0 ]]; then
		echo "quickstart: kvdexd exited with status $status" >&2
		return 1
	fi
	return 0
}

cleanup() {
	local rc=$?
	stop_server || rc=1
	if [[ $rc -ne 0 && -n $tmp && -s $tmp/kvdexd.log ]]; then
		echo "--- kvdexd log ($tmp/kvdexd.log) ---" >&2
		tail -n 30 "$tmp/kvdexd.log" >&2
	fi
	[[ -n $tmp ]] && rm -rf "$tmp"
	if [[ $rc -ne 0 ]]; then
		echo "quickstart: FAILED (status $rc)" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ${KVDEX_SKIP_DEPS:-0} != 1 ]]; then
	say "installing build dependencies (deploy/install-deps.sh)"
	[[ -f deploy/install-deps.sh ]] || fail "deploy/install-deps.sh not found"
	bash deploy/install-deps.sh
fi

say "building (meson + ninja)"
if [[ -f build/build.ninja ]]; then
	echo "reusing $root/build"
else
	meson setup build
fi
ninja -C build

kvdexd=build/server/kvdexd
bench=build/perf/kvdex-bench
[[ -x $kvdexd ]] || fail "$kvdexd was not built"
[[ -x $bench ]] || fail "$bench was not built"

say "starting a local kvdexd"
tmp=$(mktemp -d /tmp/kvdex-quickstart.XXXXXX)
sock=$tmp/kvdexd.sock
"$kvdexd" --listen-tcp 127.0.0.1:0 --listen-unix "$sock" --ready-file "$tmp/ready" \
	--log-level notice 2>"$tmp/kvdexd.log" &
server_pid=$!
for _ in $(seq 150); do
	[[ -f $tmp/ready ]] && break
	kill -0 "$server_pid" 2>/dev/null || fail "kvdexd exited during startup"
	sleep 0.1
done
[[ -f $tmp/ready ]] || fail "kvdexd not ready after 15 s"
sed 's/^/    /' "$tmp/ready"

say "running the demo workload over the local transport"
"$bench" demo --servers "unix:$sock"

say "stopping kvdexd"
stop_server || fail "kvdexd did not shut down cleanly"
echo "kvdexd stopped cleanly"
say "quick start OK"
