/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A private kvdexd for one kvdex-bench run.
 *
 * The server listens on 127.0.0.1:0 (the kernel picks the port) and on a unix
 * socket inside a mkdtemp directory, so runs never collide with each other or
 * with a deployed kvdexd. Readiness is the ready file the server writes
 * atomically once it listens (pid=, tcp=, unix= lines); we poll for it while
 * also watching for the child dying early. The child is started with
 * PR_SET_PDEATHSIG so that an interrupted benchmark does not leave a server
 * behind. Stopping is SIGTERM and a bounded wait: a server that does not exit
 * with status 0 is a failure of the run, since clean shutdown is part of
 * what we ship.
 */
#include "perf/bench.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SERVER_WAIT_MS 15000

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

int
kvdex_bench_kvdexd_path(const char *opt, char *buf, size_t len)
{
	const char *env = getenv("KVDEX_KVDEXD");
	char self[PATH_MAX];
	ssize_t n;
	char *slash;

	if (opt && *opt) {
		env = opt;
	}
	if (env && *env) {
		if ((size_t)snprintf(buf, len, "%s", env) >= len) {
			return -ENAMETOOLONG;
		}
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0) {
		return -errno;
	}
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (slash) {
		*slash = '\0';
	}
	if ((size_t)snprintf(buf, len, "%s/../server/kvdexd", self) >= len) {
		return -ENAMETOOLONG;
	}
	return 0;
}

static void
server_report_status(const char *what, int status)
{
	if (WIFEXITED(status)) {
		fprintf(stderr, "kvdex-bench: kvdexd %s with status %d\n", what,
			WEXITSTATUS(status));
	} else if (WIFSIGNALED(status)) {
		fprintf(stderr, "kvdex-bench: kvdexd %s on signal %d (%s)\n", what,
			WTERMSIG(status), strsignal(WTERMSIG(status)));
	}
}

/* Parse the ready file; 1 when complete, 0 when not there yet, -errno. */
static int
server_read_ready(struct kvdex_bench_server *s)
{
	char line[512];
	FILE *f = fopen(s->ready_path, "r");
	int have_tcp = 0, have_unix = 0;

	if (!f) {
		return errno == ENOENT ? 0 : -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "tcp=", 4) == 0 && strlen(line + 4) < sizeof(s->tcp_addr)) {
			memcpy(s->tcp_addr, line + 4, strlen(line + 4) + 1);
			have_tcp = 1;
		} else if (strncmp(line, "rdma=", 5) == 0 &&
			   strlen(line + 5) < sizeof(s->rdma_addr)) {
			memcpy(s->rdma_addr, line + 5, strlen(line + 5) + 1);
		} else if (strncmp(line, "unix=", 5) == 0 &&
			   strlen(line + 5) < sizeof(s->unix_path)) {
			memcpy(s->unix_path, line + 5, strlen(line + 5) + 1);
			have_unix = 1;
		}
	}
	fclose(f);
	if (!have_tcp || !have_unix) {
		fprintf(stderr, "kvdex-bench: ready file %s lacks tcp= or unix=\n", s->ready_path);
		return -EPROTO;
	}
	return 1;
}

const char *kvdex_bench_listen_rdma;
const char *kvdex_bench_bucket_size;

static void
server_exec(const char *kvdexd, uint64_t capacity_blocks, const struct kvdex_bench_server *s,
	    const char *unix_path)
{
	char cap[32];
	const char *argv[16];
	int i = 0;

	/* Die with the benchmark; covers the race with a parent already gone. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	argv[i++] = kvdexd;
	argv[i++] = "--listen-tcp";
	argv[i++] = "127.0.0.1:0";
	argv[i++] = "--listen-unix";
	argv[i++] = unix_path;
	argv[i++] = "--ready-file";
	argv[i++] = s->ready_path;
	argv[i++] = "--server-id";
	argv[i++] = "kvdex-bench";
	argv[i++] = "--log-level";
	argv[i++] = "warn";
	if (capacity_blocks) {
		snprintf(cap, sizeof(cap), "%" PRIu64, capacity_blocks);
		argv[i++] = "--capacity-blocks";
		argv[i++] = cap;
	}
	if (kvdex_bench_bucket_size) {
		argv[i++] = "--bucket-size";
		argv[i++] = kvdex_bench_bucket_size;
	}
	if (kvdex_bench_listen_rdma) {
		argv[i++] = "--listen-rdma";
		argv[i++] = kvdex_bench_listen_rdma;
	}
	argv[i] = NULL;
	execv(kvdexd, (char *const *)argv);
	fprintf(stderr, "kvdex-bench: cannot run %s: %s\n", kvdexd, strerror(errno));
	_exit(127);
}

static void
server_cleanup_dir(struct kvdex_bench_server *s)
{
	char sock[sizeof(s->dir) + 16];

	if (!s->dir[0]) {
		return;
	}
	unlink(s->ready_path);
	snprintf(sock, sizeof(sock), "%s/kvdexd.sock", s->dir);
	unlink(sock);
	rmdir(s->dir);
	s->dir[0] = '\0';
}

static int
server_wait_ready(struct kvdex_bench_server *s)
{
	for (unsigned waited = 0; waited < SERVER_WAIT_MS; waited += 5) {
		int status, rc;

		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			server_report_status("exited before it was ready", status);
			s->pid = 0;
			return -ECHILD;
		}
		rc = server_read_ready(s);
		if (rc) {
			return rc < 0 ? rc : 0;
		}
		sleep_ms(5);
	}
	fprintf(stderr, "kvdex-bench: kvdexd not ready after %u ms\n", SERVER_WAIT_MS);
	return -ETIMEDOUT;
}

int
kvdex_bench_server_start(const char *kvdexd, uint64_t capacity_blocks, struct kvdex_bench_server *s)
{
	char unix_path[sizeof(s->dir) + 16];
	int rc;

	memset(s, 0, sizeof(*s));
	if (access(kvdexd, X_OK) != 0) {
		rc = -errno;
		fprintf(stderr, "kvdex-bench: kvdexd not found at %s (%s); use --kvdexd PATH\n",
			kvdexd, strerror(-rc));
		return rc;
	}
	snprintf(s->dir, sizeof(s->dir), "/tmp/kvdex-bench.XXXXXX");
	if (!mkdtemp(s->dir)) {
		rc = -errno;
		s->dir[0] = '\0';
		fprintf(stderr, "kvdex-bench: mkdtemp: %s\n", strerror(-rc));
		return rc;
	}
	snprintf(s->ready_path, sizeof(s->ready_path), "%s/ready", s->dir);
	snprintf(unix_path, sizeof(unix_path), "%s/kvdexd.sock", s->dir);

	fflush(NULL);
	s->pid = fork();
	if (s->pid < 0) {
		rc = -errno;
		s->pid = 0;
		goto err_dir;
	}
	if (s->pid == 0) {
		server_exec(kvdexd, capacity_blocks, s, unix_path);
	}
	rc = server_wait_ready(s);
	if (rc) {
		goto err_stop;
	}
	return 0;

err_stop:
	kvdex_bench_server_stop(s);
	return rc;
err_dir:
	server_cleanup_dir(s);
	return rc;
}

int
kvdex_bench_server_stop(struct kvdex_bench_server *s)
{
	int status = 0, rc = 0;
	unsigned waited = 0;

	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		while (waitpid(s->pid, &status, WNOHANG) == 0) {
			if (waited >= SERVER_WAIT_MS) {
				fprintf(stderr, "kvdex-bench: kvdexd ignored SIGTERM for %u ms\n",
					SERVER_WAIT_MS);
				kill(s->pid, SIGKILL);
				waitpid(s->pid, &status, 0);
				rc = -ETIMEDOUT;
				break;
			}
			sleep_ms(5);
			waited += 5;
		}
		if (!rc && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			server_report_status("stopped", status);
			rc = -EIO;
		}
		s->pid = 0;
	}
	server_cleanup_dir(s);
	return rc;
}
