/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-bench: benchmarks and the demo workload of kvdex.
 *
 *   kvdex-bench lookup ...   lookup latency/throughput per transport and chain
 *   kvdex-bench demo ...     a synthetic shared-prefix serving workload
 *   kvdex-bench policy ...   cost per evicted block and per routing decision
 *   kvdex-bench baseline ... the same lookups and publishes against Redis and memcached
 *
 * Each subcommand spawns a private kvdexd unless --servers is given. Exit
 * status: 0 success, 1 failure (including any wrong lookup answer), 2 usage.
 * Speed never decides the exit status.
 */
#include "perf/bench.h"
#include "perf/bench_baseline.h"

#include <stdio.h>
#include <string.h>

static void
bench_usage(FILE *f)
{
	fputs("usage: kvdex-bench <command> [options]\n"
	      "commands:\n"
	      "  lookup   time prefix lookups per transport and chain length\n"
	      "  demo     run a small shared-prefix serving workload end to end\n"
	      "  policy   time cache eviction per block and routing decisions per policy\n"
	      "  baseline compare kvdex with a real Redis and memcached, side by side\n"
	      "Run 'kvdex-bench <command> --help' for the options of a command.\n",
	      f);
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		bench_usage(stderr);
		return KVDEX_BENCH_EXIT_USAGE;
	}
	if (strcmp(argv[1], "lookup") == 0) {
		return kvdex_bench_lookup_main(argc, argv);
	}
	if (strcmp(argv[1], "demo") == 0) {
		return kvdex_bench_demo_main(argc, argv);
	}
	if (strcmp(argv[1], "policy") == 0) {
		return kvdex_bench_policy_main(argc, argv);
	}
	if (strcmp(argv[1], "baseline") == 0) {
		return kvdex_bench_baseline_main(argc, argv);
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		bench_usage(stdout);
		return KVDEX_BENCH_EXIT_OK;
	}
	fprintf(stderr, "kvdex-bench: unknown command '%s'\n", argv[1]);
	bench_usage(stderr);
	return KVDEX_BENCH_EXIT_USAGE;
}
