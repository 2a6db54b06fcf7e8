/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Stats counter names docs/OPERATIONS.md documents and operators rely on,
 * written out here independently of server/server.h so that a renamed or lost
 * counter fails the tests that check them (tests/server/writer_test.c on the
 * handler, tests/integration/basic_test.c end to end).
 */
#ifndef KVDEX_TESTS_FAKES_COUNTER_NAMES_H
#define KVDEX_TESTS_FAKES_COUNTER_NAMES_H

static const char *const kvdex_test_counter_names[] = {
	"conns_accepted",
	"conns_active",
	"conns_rejected",
	"frames_rx",
	"bad_frames",
	"oversize_frames",
	"bad_protobuf",
	"bad_version",
	"bad_auth",
	"not_ready",
	"disconnect_mid_msg",
	"oversize_batches",
	"unknown_namespace",
	"unknown_worker",
	"stale_incarnation",
	"spec_publishes",
	"malformed_requests",
	"publish_batches",
	"events_applied",
	"events_ignored",
	"seq_gaps",
	"seq_duplicates",
	"publisher_restarts",
	"clears",
	"index_full",
	"blocks",
	"records",
	"holders",
	"home_buckets",
	"overflow_buckets",
	"overflow_buckets_used",
	"table_bytes",
	"region_bytes",
	"resizes",
	"tcp_read_batches",
	"tcp_read_ops",
	"tcp_read_bytes",
	"bad_reads",
	"rdma_conns_accepted",
	"rdma_conns_rejected",
	"rdma_cm_events",
	"rdma_qp_errors",
	"spec_expired",
	"swept_holders",
	"namespaces",
	"workers",
	"slots_used",
	"worker_loads",
	"uptime_s",
};

#define KVDEX_TEST_NCOUNTER_NAMES                                                                  \
	(sizeof(kvdex_test_counter_names) / sizeof(kvdex_test_counter_names[0]))

#endif /* KVDEX_TESTS_FAKES_COUNTER_NAMES_H */
