#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# vm-baseline.sh - kvdex-bench baseline (kvdex over verbs, shm and tcp, Redis,
# memcached) inside the Soft-RoCE VM, in one boot, with kvdexd's own CPU.
#
# Runs INSIDE the VM (tests/rdma/vm/run-vm.sh sets RXE_*), from the host as
#     mkdir -p /tmp/vmbin && cp /usr/bin/redis-server /usr/bin/memcached /tmp/vmbin/
#     tests/rdma/vm/run-vm.sh -x build -x perf -x /tmp/vmbin -t 900 -- vm-baseline.sh [ARGS]
# -x perf puts this script on the VM's PATH, -x /tmp/vmbin redis-server and
# memcached (run-vm.sh adds their shared libraries); the working directory is
# the first -x, the build dir. ARGS go to kvdex-bench baseline after the
# defaults below (later options win).
#
# Soft-RoCE is software under TCG: compare rows within one boot, never with
# the host's figures. Besides the bench's own table this prints:
#   1. an idle kvdexd's CPU (all threads, schedstat) over 5 s: the floor
#      under every kvdex row's srv_cpu_us (the writer's tick, the sweeper);
#   2. kvdexd's CPU and times-scheduled per thread, sampled every 0.5 s
#      during the run and summed per bench phase (intervals that straddle a
#      phase change are dropped). For kvdex-verbs lookups the io thread
#      should not be scheduled per lookup: reads are one-sided. Note that
#      the guest kernel has no IRQ_TIME_ACCOUNTING: rxe's softirq work is
#      charged to whatever task is current, so a few ms/s land on kvdexd.
# Exit status: kvdex-bench's.
#
# Environment: KVDEX_BENCH (default ./perf/kvdex-bench), VMB_SYSTEMS
# (default kvdex-verbs,kvdex-shm,kvdex-tcp,redis-mget,redis-func,memcached).
BENCH=${KVDEX_BENCH:-./perf/kvdex-bench}
KVDEXD=$(dirname "$BENCH")/../server/kvdexd
SYSTEMS=${VMB_SYSTEMS:-kvdex-verbs,kvdex-shm,kvdex-tcp,redis-mget,redis-func,memcached}
IP=${RXE_IP:-198.18.0.1}
MON=/tmp/vmb-mon.log
# redis-server wants a writable working directory
BENCH=$(readlink -f "$BENCH")
KVDEXD=$(readlink -f "$KVDEXD")
cd /tmp || exit 1

proc_cpu() { # ns on CPU of every thread of $1
	s=0
	for t in /proc/"$1"/task/*/schedstat; do
		read -r a _ < "$t" && s=$((s + a))
	done
	echo "$s"
}

idle_cpu() {
	rm -f /tmp/vmb-idle.ready
	"$KVDEXD" --listen-tcp 127.0.0.1:0 --listen-unix none --listen-rdma "$IP:0" \
		--capacity-blocks 20000 --ready-file /tmp/vmb-idle.ready --log-level warn &
	pid=$!
	i=0
	while [ ! -e /tmp/vmb-idle.ready ] && [ $i -lt 200 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	sleep 1
	a=$(proc_cpu $pid)
	sleep 5
	b=$(proc_cpu $pid)
	echo "# idle kvdexd (tcp + rdma listeners, no client): $(((b - a) / 5000)) us CPU per second" \
		"($(ls /proc/$pid/task | wc -l) threads)"
	kill $pid
	wait $pid
}

monitor() { # MON <uptime> <pid> <tid>:<ns>:<times scheduled> ...
	while :; do
		# the rows' servers live until the end: the newest is the current row's
		pid=0
		for p in $(pidof kvdexd); do
			[ "$p" -gt "$pid" ] && pid=$p
		done
		if [ "$pid" != 0 ]; then
			read -r up _ < /proc/uptime
			line="MON $up $pid"
			for t in /proc/"$pid"/task/*; do
				read -r a _ n < "$t"/schedstat && line="$line ${t##*/}:$a:$n"
			done
			echo "$line" >> $MON
		fi
		sleep 0.5
	done
}

# Sum the samples per phase (the last "kvdex-bench: SYS: PHASE" line); kvdex rows only.
summarize() {
	awk '
	/^kvdex-bench: [a-z]+-[a-z]+: / {
		sub(/^kvdex-bench: /, ""); phase = $0; changed = 1; next
	}
	/^MON / {
		up = $2; pid = $3
		if (pid == ppid && !changed && phase != "") {
			for (i = 4; i <= NF; i++) {
				split($i, f, ":")
				if (!(f[1] in pns)) continue
				k = phase SUBSEP (i - 4)
				cpu[k] += f[2] - pns[f[1]]; runs[k] += f[3] - pn[f[1]]
				if (nt[phase] < i - 3) nt[phase] = i - 3
			}
			secs[phase] += up - pup
			if (!(phase in seen)) { seen[phase] = 1; order[++np] = phase }
		}
		delete pns; delete pn
		for (i = 4; i <= NF; i++) { split($i, f, ":"); pns[f[1]] = f[2]; pn[f[1]] = f[3] }
		ppid = pid; pup = up; changed = 0
	}
	END {
		print "# kvdexd per thread (tid order), CPU ms/s and times scheduled /s, per phase:"
		for (j = 1; j <= np; j++) {
			p = order[j]; s = secs[p]
			if (s <= 0 || p !~ /^kvdex-/) continue
			line = sprintf("#   %-34s %5.1f s:", p, s)
			for (i = 0; i < nt[p]; i++) {
				k = p SUBSEP i
				line = line sprintf("  t%d %6.1f ms/s %6.0f/s", i, cpu[k] / 1e6 / s, runs[k] / s)
			}
			print line
		}
	}' "$MON"
}

idle_cpu
rm -f $MON
monitor &
mpid=$!
"$BENCH" baseline --listen-rdma "$IP:0" --systems "$SYSTEMS" --blocks 20000 --duration-ms 2000 \
	--chains 1,8,32,64 --publish-events 4096 --checks 500 "$@" 2>> $MON
rc=$?
kill $mpid
wait $mpid 2> /dev/null
grep -v '^MON ' $MON | grep -v '^kvdex-bench: [a-z-]*: \(start and load\|lookups of\|churn and\)' >&2
summarize
exit $rc
