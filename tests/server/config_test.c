/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdexd configuration: flags, config file, precedence and error messages.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "server/config.h"

TestSuite(config, .timeout = 10);

static char tmp_path[64];

static const char *
write_file(const char *text)
{
	int fd;

	snprintf(tmp_path, sizeof(tmp_path), "/tmp/kvdexd-cfg-test-XXXXXX");
	fd = mkstemp(tmp_path);
	cr_assert(ge(int, fd, 0));
	cr_assert(eq(sz, (size_t)write(fd, text, strlen(text)), strlen(text)));
	close(fd);
	return tmp_path;
}

static int
parse(struct kvdex_config *cfg, char *err, size_t errlen, int argc, char **argv)
{
	FILE *devnull = fopen("/dev/null", "w");
	int rc = kvdex_config_parse_args(cfg, argc, argv, devnull, err, errlen);

	fclose(devnull);
	return rc;
}

/* 1. No arguments: every documented default. */
Test(config, defaults)
{
	char *argv[] = {"kvdexd", NULL};
	struct kvdex_config cfg;
	char err[256] = "";

	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 1, argv), 0));
	cr_assert(cfg.tcp_enabled);
	cr_assert(eq(str, cfg.tcp_host, "127.0.0.1"));
	cr_assert(eq(u16, cfg.tcp_port, 7400));
	cr_assert(cfg.unix_enabled);
	cr_assert(eq(str, cfg.unix_path, ""));
	cr_assert(eq(u64, cfg.cluster_epoch, 1));
	cr_assert(eq(str, cfg.auth_token, ""));
	cr_assert(eq(u64, cfg.capacity_blocks, 1048576));
	cr_assert(eq(u64, cfg.bucket_size, 512));
	cr_assert(eq(u64, cfg.max_region_mb, 4096));
	cr_assert(eq(u64, cfg.max_workers, 4096));
	cr_assert(eq(u64, cfg.max_namespaces, 1024));
	cr_assert(eq(u64, cfg.max_batch_events, 65536));
	cr_assert(eq(u64, cfg.max_msg_bytes, 4194304));
	cr_assert(eq(u64, cfg.max_conns, 1024));
	cr_assert(eq(u64, cfg.spec_ttl_ms, 2000));
	cr_assert(eq(u64, cfg.sweep_buckets_per_tick, 4096));
	cr_assert(eq(int, cfg.log_level, KVDEX_LOG_LVL_NOTICE));
}

/* 2. Flags in both spellings. */
Test(config, flags)
{
	char *argv[] = {
		"kvdexd", "--listen-tcp=[::1]:0", "--listen-unix", "/tmp/x.sock", "--bucket-size",
		"512",	  "--log-level=debug",	  "--auth-token",  "s3cret",	  NULL};
	struct kvdex_config cfg;
	char err[256] = "";

	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 9, argv), 0), "%s", err);
	cr_assert(eq(str, cfg.tcp_host, "::1"));
	cr_assert(eq(u16, cfg.tcp_port, 0));
	cr_assert(eq(str, cfg.unix_path, "/tmp/x.sock"));
	cr_assert(eq(u64, cfg.bucket_size, 512));
	cr_assert(eq(int, cfg.log_level, KVDEX_LOG_LVL_DEBUG));
	cr_assert(eq(str, cfg.auth_token, "s3cret"));
}

/* 3. A config file, with comments, overridden by flags. */
Test(config, file_then_flags)
{
	const char *path = write_file("# kvdexd test\n"
				      "listen-tcp = none\n"
				      "\n"
				      "capacity-blocks = 4096   # small\n"
				      "server-id = \"mem-a\"\n"
				      "max-conns=7\n");
	char *argv[] = {"kvdexd", "--config", (char *)path, "--max-conns", "9", NULL};
	struct kvdex_config cfg;
	char err[256] = "";

	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 5, argv), 0), "%s", err);
	cr_assert(not(cfg.tcp_enabled));
	cr_assert(eq(u64, cfg.capacity_blocks, 4096));
	cr_assert(eq(str, cfg.server_id, "mem-a"));
	cr_assert(eq(u64, cfg.max_conns, 9));
	unlink(path);
}

/* 4. An unknown key in the file names the file and the line. */
Test(config, file_unknown_key_names_line)
{
	const char *path = write_file("capacity-blocks = 10\n# ok\nbogus-key = 1\n");
	char *argv[] = {"kvdexd", "--config", (char *)path, NULL};
	struct kvdex_config cfg;
	char want[128];
	char err[256] = "";

	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv), -EINVAL));
	snprintf(want, sizeof(want), "%s:3", path);
	cr_assert(ne(ptr, strstr(err, want), NULL), "error was: %s", err);
	cr_assert(ne(ptr, strstr(err, "bogus-key"), NULL), "error was: %s", err);
	unlink(path);
}

/* 5. Bad values, in the file and on the command line. */
Test(config, bad_values)
{
	const char *path = write_file("bucket-size = 300\n");
	char *argv_file[] = {"kvdexd", "--config", (char *)path, NULL};
	char *argv_num[] = {"kvdexd", "--max-workers", "70000", NULL};
	char *argv_nan[] = {"kvdexd", "--max-conns", "12x", NULL};
	char *argv_ttl[] = {"kvdexd", "--spec-ttl-ms", "8000", NULL};
	char *argv_tcp[] = {"kvdexd", "--listen-tcp", "localhost", NULL};
	char *argv_lvl[] = {"kvdexd", "--log-level", "loud", NULL};
	char *argv_flag[] = {"kvdexd", "--no-such-flag", "1", NULL};
	char *argv_pos[] = {"kvdexd", "stray", NULL};
	char *argv_none[] = {"kvdexd", "--listen-tcp", "none", "--listen-unix", "none", NULL};
	char *argv_miss[] = {"kvdexd", "--max-conns", NULL};
	struct kvdex_config cfg;
	char err[256] = "";

	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv_file), -EINVAL));
	cr_assert(ne(ptr, strstr(err, ":1"), NULL), "error was: %s", err);
	cr_assert(ne(ptr, strstr(err, "power of two"), NULL), "error was: %s", err);
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv_num), -EINVAL));
	cr_assert(ne(ptr, strstr(err, "max-workers"), NULL), "error was: %s", err);
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv_nan), -EINVAL));
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv_ttl), -EINVAL));
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv_tcp), -EINVAL));
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv_lvl), -EINVAL));
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv_flag), -EINVAL));
	cr_assert(ne(ptr, strstr(err, "no-such-flag"), NULL), "error was: %s", err);
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 2, argv_pos), -EINVAL));
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 5, argv_none), -EINVAL));
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 2, argv_miss), -EINVAL));
	unlink(path);
}

/* 6. A file line without '=' is an error naming the line. */
Test(config, file_syntax_error)
{
	const char *path = write_file("\n\njust words\n");
	char *argv[] = {"kvdexd", "--config", (char *)path, NULL};
	struct kvdex_config cfg;
	char want[128];
	char err[256] = "";

	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv), -EINVAL));
	snprintf(want, sizeof(want), "%s:3", path);
	cr_assert(ne(ptr, strstr(err, want), NULL), "error was: %s", err);
	unlink(path);
}

/* 7. The auth token can come from a file (first line, trimmed). */
Test(config, auth_token_file)
{
	const char *path = write_file("  tok-123  \nignored\n");
	char *argv[] = {"kvdexd", "--auth-token-file", (char *)path, NULL};
	char *argv_missing[] = {"kvdexd", "--auth-token-file", "/nonexistent/tok", NULL};
	struct kvdex_config cfg;
	char err[256] = "";

	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv), 0), "%s", err);
	cr_assert(eq(str, cfg.auth_token, "tok-123"));
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 3, argv_missing), -EINVAL));
	unlink(path);
}

/* 8. --help and --version ask the caller to exit 0. */
Test(config, help_and_version)
{
	char *argv_h[] = {"kvdexd", "--max-conns", "x", "--help", NULL};
	char *argv_v[] = {"kvdexd", "-V", NULL};
	struct kvdex_config cfg;
	char err[256] = "";

	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 2, argv_v), 1));
	cr_assert(eq(int, parse(&cfg, err, sizeof(err), 4, argv_h), 1));
}

/* 9. --help documents every option with its default. */
Test(config, help_lists_options)
{
	static const char *const names[] = {
		"--config",
		"--listen-tcp",
		"--listen-unix",
		"--server-id",
		"--cluster-epoch",
		"--auth-token",
		"--auth-token-file",
		"--capacity-blocks",
		"--bucket-size",
		"--max-region-mb",
		"--max-workers",
		"--max-namespaces",
		"--max-batch-events",
		"--max-msg-bytes",
		"--max-conns",
		"--spec-ttl-ms",
		"--sweep-buckets-per-tick",
		"--log-level",
		"--ready-file",
	};
	char buf[16384];
	FILE *f = fmemopen(buf, sizeof(buf), "w");

	kvdex_config_usage(f);
	fclose(f);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		cr_assert(ne(ptr, strstr(buf, names[i]), NULL), "%s missing", names[i]);
	}
	cr_assert(ne(ptr, strstr(buf, "default: 4096"), NULL));
}
