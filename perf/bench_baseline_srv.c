/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The baseline servers of kvdex-bench baseline: a real redis-server and
 * memcached, started from their Debian binaries on 127.0.0.1 only.
 *
 * Neither takes port 0 and reports the port it got, so we pick one by binding
 * 127.0.0.1:0, reading the port and closing; another process could take it
 * in between, in which case the server exits at once and we say so (with its
 * log). Readiness is "accepts a TCP connection". Both run single-threaded for
 * fairness with kvdexd's one writer thread: Redis executes commands on one
 * thread (io-threads stays at its default of 1), memcached gets -t 1.
 * Redis gets --save '' --appendonly no, so nothing touches the disk, and its
 * --dir is our temp directory. Children get PR_SET_PDEATHSIG so that an
 * interrupted benchmark leaves nothing behind; stopping is SIGTERM and a
 * bounded wait, and a non-zero exit status fails the run.
 *
 * Server CPU time is kvdex_bench_proc_cpu_ns() (bench_util.c): every thread's
 * time on CPU from /proc/<pid>/task/<tid>/schedstat.
 */
#include "perf/bench_baseline.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROC_WAIT_MS 10000u

static void
srv_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

int
bl_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	socklen_t len = sizeof(a);
	int fd, rc;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -errno;
	}
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &len)) {
		rc = -errno;
		close(fd);
		return rc;
	}
	close(fd);
	return ntohs(a.sin_port);
}

int
bl_tcp_connect(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd, one = 1, rc;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -errno;
	}
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		rc = -errno;
		close(fd);
		return rc;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int
bl_find_program(const char *prog, char *buf, size_t len)
{
	const char *path = getenv("PATH");
	char dir[4096];

	if (strchr(prog, '/')) {
		if (access(prog, X_OK) != 0) {
			return -ENOENT;
		}
		snprintf(buf, len, "%s", prog);
		return 0;
	}
	/* Debian puts both servers in /usr/bin; sbin is for completeness. */
	snprintf(dir, sizeof(dir), "%s:/usr/sbin:/sbin", path ? path : "/usr/bin:/bin");
	for (char *save = NULL, *d = strtok_r(dir, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		if ((size_t)snprintf(buf, len, "%s/%s", d, prog) < len && access(buf, X_OK) == 0) {
			return 0;
		}
	}
	return -ENOENT;
}

void
bl_program_version(const char *path, const char *arg, char *buf, size_t len)
{
	char cmd[4200];
	FILE *f;

	snprintf(buf, len, "?");
	snprintf(cmd, sizeof(cmd), "'%s' %s 2>&1", path, arg);
	f = popen(cmd, "r");
	if (!f) {
		return;
	}
	if (fgets(buf, (int)len, f)) {
		buf[strcspn(buf, "\n")] = '\0';
	}
	pclose(f);
}

static void
proc_print_log(const struct bl_proc *p)
{
	char line[512];
	FILE *f = fopen(p->log, "r");

	if (!f) {
		return;
	}
	fprintf(stderr, "---- %s log (%s) ----\n", p->what, p->log);
	while (fgets(line, sizeof(line), f)) {
		fputs(line, stderr);
	}
	fprintf(stderr, "----\n");
	fclose(f);
}

static void
proc_cleanup(struct bl_proc *p)
{
	if (!p->dir[0]) {
		return;
	}
	unlink(p->log);
	rmdir(p->dir);
	p->dir[0] = '\0';
}

static void
proc_exec(const struct bl_proc *p, char *const argv[])
{
	int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	execv(argv[0], argv);
	fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Wait until the server accepts a connection or dies. */
static int
proc_wait_ready(struct bl_proc *p)
{
	for (unsigned waited = 0; waited < PROC_WAIT_MS; waited += 5) {
		int status, fd;

		if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
			fprintf(stderr,
				"kvdex-bench: %s exited before it was ready (status 0x%x)\n",
				p->what, status);
			p->pid = 0;
			return -ECHILD;
		}
		fd = bl_tcp_connect(p->port);
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		srv_sleep_ms(5);
	}
	fprintf(stderr, "kvdex-bench: %s not accepting on 127.0.0.1:%d after %u ms\n", p->what,
		p->port, PROC_WAIT_MS);
	return -ETIMEDOUT;
}

static int
proc_start(struct bl_proc *p, char *const argv[])
{
	int rc;

	fflush(NULL);
	p->pid = fork();
	if (p->pid < 0) {
		rc = -errno;
		p->pid = 0;
		proc_cleanup(p);
		return rc;
	}
	if (p->pid == 0) {
		proc_exec(p, argv);
	}
	rc = proc_wait_ready(p);
	if (rc) {
		proc_print_log(p);
		bl_proc_stop(p);
	}
	return rc;
}

/* Temp directory, log path and a free port. */
static int
proc_prepare(struct bl_proc *p, const char *what)
{
	int port;

	memset(p, 0, sizeof(*p));
	snprintf(p->what, sizeof(p->what), "%s", what);
	port = bl_free_port();
	if (port < 0) {
		fprintf(stderr, "kvdex-bench: no free port for %s: %s\n", what, strerror(-port));
		return port;
	}
	p->port = port;
	snprintf(p->dir, sizeof(p->dir), "/tmp/kvdex-bench-%s.XXXXXX", what);
	if (!mkdtemp(p->dir)) {
		port = -errno;
		p->dir[0] = '\0';
		fprintf(stderr, "kvdex-bench: mkdtemp: %s\n", strerror(-port));
		return port;
	}
	snprintf(p->log, sizeof(p->log), "%s/log", p->dir);
	return 0;
}

int
bl_redis_start(const char *path, struct bl_proc *p)
{
	char port[16];
	int rc = proc_prepare(p, "redis-server");

	if (rc) {
		return rc;
	}
	snprintf(port, sizeof(port), "%d", p->port);
	{
		char *const argv[] = {
			(char *)path, "--port",		  port,	     "--bind",
			"127.0.0.1",  "--protected-mode", "yes",     "--save",
			"",	      "--appendonly",	  "no",	     "--dir",
			p->dir,	      "--daemonize",	  "no",	     "--io-threads",
			"1",	      "--loglevel",	  "warning", NULL,
		};

		return proc_start(p, argv);
	}
}

int
bl_mc_start(const char *path, struct bl_proc *p)
{
	char port[16];
	int rc = proc_prepare(p, "memcached");

	if (rc) {
		return rc;
	}
	snprintf(port, sizeof(port), "%d", p->port);
	{
		/* As root memcached insists on -u and switches to that user. We
		 * pass root itself: a real credential change would clear
		 * PR_SET_PDEATHSIG (prctl(2)), and a benchmark killed hard would
		 * leave memcached running. Not root: -u is not needed. */
		char *const argv[] = {
			(char *)path, "-l", "127.0.0.1", "-p", port,   "-U",
			"0",	      "-t", "1",	 "-m", "1024", geteuid() == 0 ? "-u" : NULL,
			"root",	      NULL,
		};

		return proc_start(p, argv);
	}
}

int
bl_proc_stop(struct bl_proc *p)
{
	unsigned waited = 0;
	int status = 0, rc = 0;

	if (p->pid > 0) {
		kill(p->pid, SIGTERM);
		while (waitpid(p->pid, &status, WNOHANG) == 0) {
			if (waited >= PROC_WAIT_MS) {
				fprintf(stderr, "kvdex-bench: %s ignored SIGTERM for %u ms\n",
					p->what, PROC_WAIT_MS);
				kill(p->pid, SIGKILL);
				waitpid(p->pid, &status, 0);
				rc = -ETIMEDOUT;
				break;
			}
			srv_sleep_ms(5);
			waited += 5;
		}
		if (!rc && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			fprintf(stderr, "kvdex-bench: %s stopped with status 0x%x\n", p->what,
				status);
			proc_print_log(p);
			rc = -EIO;
		}
		p->pid = 0;
	}
	proc_cleanup(p);
	return rc;
}
