/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdexd: the kvdex memory server (docs/DESIGN.md §4).
 *
 * main parses the configuration (exit 2 on a usage or config error), builds
 * the region, the index and the registries, binds the listeners, starts the
 * writer and io threads, writes the ready file, then waits on a signalfd for
 * SIGTERM/SIGINT. Shutdown order: the io thread stops accepting and reading,
 * the writer drains its queue, the io thread flushes the replies and closes
 * the connections, then main removes the unix socket and frees the region.
 * Exit 0 after a clean shutdown, 1 on a runtime failure.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <urcu.h>

#include "common/log.h"
#include "server/rdma.h"
#include "server/server.h"

#define LOG_COMP "server.main"

static int
write_ready_file(const struct kvdex_server *srv)
{
	char tmp[KVDEX_CFG_PATH + 16];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", srv->cfg.ready_file);
	f = fopen(tmp, "w");
	if (f == NULL) {
		KVDEX_LOG_ERR(LOG_COMP, "ready-file %s: %s", tmp, strerror(errno));
		return -errno;
	}
	fprintf(f, "pid=%ld\n", (long)getpid());
	if (srv->tcp_fd >= 0) {
		fprintf(f, "tcp=%s:%u\n", srv->cfg.tcp_host, srv->tcp_port);
	}
	if (srv->unix_fd >= 0) {
		fprintf(f, "unix=%s\n", srv->unix_path);
	}
	if (srv->rdma_listen[0] != '\0') {
		fprintf(f, "rdma=%s\n", srv->rdma_listen);
	}
	if (fclose(f) != 0 || rename(tmp, srv->cfg.ready_file) != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "ready-file %s: %s", srv->cfg.ready_file, strerror(errno));
		unlink(tmp);
		return -errno;
	}
	return 0;
}

static int
build_state(struct kvdex_server *srv)
{
	const struct kvdex_config *cfg = &srv->cfg;
	struct kvdex_region_opts ro = {
		.region_max = cfg->max_region_mb << 20,
		.bucket_size = (uint32_t)cfg->bucket_size,
		.workers_cap = (uint32_t)cfg->max_workers,
	};
	struct kvdex_index_opts io = {
		.capacity_blocks = cfg->capacity_blocks,
		.slots = (uint32_t)cfg->max_workers,
		.sweep_per_tick = (uint32_t)cfg->sweep_buckets_per_tick,
		.spec_ttl_ms = (uint32_t)cfg->spec_ttl_ms,
	};
	int rc;

	rc = kvdex_region_create(&ro, &srv->rg);
	if (rc == 0) {
		rc = kvdex_index_create(srv->rg, &io, &srv->ix);
	}
	if (rc == 0) {
		rc = kvdex_workers_create(srv->rg, srv->ix, (uint32_t)cfg->max_workers, &srv->wt);
	}
	if (rc == 0) {
		rc = kvdex_namespaces_create((uint32_t)cfg->max_namespaces, &srv->nss);
	}
	if (rc == 0) {
		rc = kvdex_publishers_create(&srv->pubs);
	}
	return rc;
}

static int
make_eventfds(struct kvdex_server *srv)
{
	srv->writer_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	srv->io_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (srv->writer_efd < 0 || srv->io_efd < 0) {
		KVDEX_LOG_ERR(LOG_COMP, "eventfd: %s", strerror(errno));
		return -errno;
	}
	return 0;
}

static void
server_init(struct kvdex_server *srv)
{
	memset(srv, 0, sizeof(*srv));
	srv->writer_efd = -1;
	srv->io_efd = -1;
	srv->epfd = -1;
	srv->tcp_fd = -1;
	srv->unix_fd = -1;
	cds_wfcq_init(&srv->req_head, &srv->req_tail);
	cds_wfcq_init(&srv->rep_head, &srv->rep_tail);
	srv->start_ns = kvdex_server_now_ns();
}

static void
drain_queues(struct kvdex_server *srv)
{
	struct cds_wfcq_node *node;

	while ((node = cds_wfcq_dequeue_blocking(&srv->req_head, &srv->req_tail)) != NULL) {
		struct kvdex_req *req = caa_container_of(node, struct kvdex_req, qn);

		kvdex_sconn_put(req->conn);
		free(req);
	}
	while ((node = cds_wfcq_dequeue_blocking(&srv->rep_head, &srv->rep_tail)) != NULL) {
		kvdex_rep_free(caa_container_of(node, struct kvdex_rep, qn));
	}
}

static void
server_fini(struct kvdex_server *srv)
{
	kvdex_io_close_listeners(srv);
	if (srv->unix_bound) {
		unlink(srv->unix_path);
	}
	drain_queues(srv);
	kvdex_publishers_destroy(srv->pubs);
	kvdex_namespaces_destroy(srv->nss);
	kvdex_workers_destroy(srv->wt);
	kvdex_index_destroy(srv->ix);
	/* Every QP is gone (io thread): the region's MRs and PD reference go,
	 * then the listener id and the CM event channel. */
	kvdex_region_destroy(srv->rg);
	kvdex_rdma_fini(srv);
	if (srv->epfd >= 0) {
		close(srv->epfd);
	}
	if (srv->io_efd >= 0) {
		close(srv->io_efd);
	}
	if (srv->writer_efd >= 0) {
		close(srv->writer_efd);
	}
	cds_wfcq_destroy(&srv->req_head, &srv->req_tail);
	cds_wfcq_destroy(&srv->rep_head, &srv->rep_tail);
}

static int
block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	/* Threads inherit the mask: only the signalfd sees these. */
	if (pthread_sigmask(SIG_BLOCK, set, NULL) != 0) {
		return -errno;
	}
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int
wait_for_signal(struct kvdex_server *srv, const sigset_t *set)
{
	int sfd = signalfd(-1, set, SFD_CLOEXEC);
	struct signalfd_siginfo si;

	if (sfd < 0) {
		KVDEX_LOG_ERR(LOG_COMP, "signalfd: %s", strerror(errno));
		return -errno;
	}
	for (;;) {
		ssize_t n = read(sfd, &si, sizeof(si));

		if (n == (ssize_t)sizeof(si)) {
			KVDEX_LOG_NOTICE(LOG_COMP, "%s received: shutting down",
					 strsignal((int)si.ssi_signo));
			break;
		}
		if (n < 0 && errno != EINTR) {
			KVDEX_LOG_ERR(LOG_COMP, "signalfd read: %s", strerror(errno));
			close(sfd);
			return -EIO;
		}
	}
	close(sfd);
	return 0;
}

static void
stop_threads(struct kvdex_server *srv)
{
	uatomic_set(&srv->stopping, 1);
	if (!srv->io_started) {
		/* No io thread: nothing more will be queued. */
		uatomic_set(&srv->io_quiesced, 1);
	} else {
		kvdex_server_kick(srv->io_efd);
	}
	if (srv->writer_started) {
		kvdex_server_kick(srv->writer_efd);
		pthread_join(srv->writer_thread, NULL);
	}
	uatomic_set(&srv->writer_done, 1);
	if (srv->io_started) {
		kvdex_server_kick(srv->io_efd);
		pthread_join(srv->io_thread, NULL);
	}
}

static void
log_startup(const struct kvdex_server *srv)
{
	const struct kvdex_region_hdr *h = &srv->rg->hdr;

	if (srv->tcp_fd >= 0) {
		KVDEX_LOG_NOTICE(LOG_COMP, "listening on tcp %s:%u", srv->cfg.tcp_host,
				 srv->tcp_port);
	}
	if (srv->unix_fd >= 0) {
		KVDEX_LOG_NOTICE(LOG_COMP, "listening on unix %s", srv->unix_path);
	}
	if (srv->rdma_listen[0] != '\0') {
		KVDEX_LOG_NOTICE(LOG_COMP, "listening on rdma %s (region rkey %#x)",
				 srv->rdma_listen, h->mr_rkey);
	}
	KVDEX_LOG_NOTICE(LOG_COMP,
			 "server %s: region %llu of max %llu bytes, %u-byte buckets, %u home + %u "
			 "overflow buckets at %llu, %u worker rows, incarnation %016llx%s",
			 srv->server_id, (unsigned long long)h->region_size,
			 (unsigned long long)srv->rg->max, h->bucket_size, 1u << h->table_log2,
			 h->overflow_count, (unsigned long long)h->table_off, h->workers_cap,
			 (unsigned long long)h->server_incarnation,
			 srv->cfg.auth_token[0] != '\0' ? ", auth on" : "");
}

static int
run(struct kvdex_server *srv, const sigset_t *set)
{
	int rc;

	rc = build_state(srv);
	if (rc == 0) {
		rc = make_eventfds(srv);
	}
	if (rc == 0) {
		rc = kvdex_io_listen(srv);
	}
	if (rc == 0) {
		rc = kvdex_rdma_listen(srv);
	}
	if (rc == 0) {
		rc = kvdex_writer_start(srv);
	}
	if (rc == 0) {
		rc = kvdex_io_start(srv);
	}
	if (rc == 0) {
		log_startup(srv);
		if (srv->cfg.ready_file[0] != '\0') {
			rc = write_ready_file(srv);
		}
	}
	if (rc == 0) {
		rc = wait_for_signal(srv, set);
	}
	stop_threads(srv);
	if (rc == 0 && uatomic_read(&srv->io_failed)) {
		rc = -EIO;
	}
	return rc;
}

int
main(int argc, char **argv)
{
	static struct kvdex_server srv;
	char err[512] = "";
	sigset_t set;
	int rc;

	/* First thing: a SIGTERM from a supervisor that races our start-up must
	 * still end in a clean shutdown, not the default disposition. */
	if (block_signals(&set) != 0) {
		perror("kvdexd: blocking signals");
		return 1;
	}
	server_init(&srv);
	kvdex_log_set_level(KVDEX_LOG_LVL_NOTICE);
	rc = kvdex_config_parse_args(&srv.cfg, argc, argv, stdout, err, sizeof(err));
	if (rc == 1) {
		return 0;
	}
	if (rc != 0) {
		fprintf(stderr, "kvdexd: %s\nTry 'kvdexd --help'.\n", err);
		return 2;
	}
	kvdex_log_set_level(srv.cfg.log_level);
	rcu_register_thread();
	rc = run(&srv, &set);
	server_fini(&srv);
	rcu_unregister_thread();
	if (rc != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "exiting after a failure: %s", strerror(-rc));
		return 1;
	}
	KVDEX_LOG_NOTICE(LOG_COMP, "stopped");
	return 0;
}
