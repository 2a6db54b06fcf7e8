/* SPDX-License-Identifier: Apache-2.0 */
/* The client config file (client/src/config.c): values and file:line errors. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/src/internal.h"

TestSuite(config, .timeout = 5);

/* 1: every key. */
Test(config, good)
{
	struct kvdex_client_config cfg;
	char err[256] = "";
	const char *text = "# comment\n"
			   "\n"
			   "server = a=127.0.0.1:7400\n"
			   "  server=unix:/tmp/k.sock   \n"
			   "auth_token = s3cret\n"
			   "transport = tcp\n"
			   "timeout_ms = 150\n"
			   "cluster_epoch = 9\n";

	cr_assert(eq(int, kvdex_config_parse("c.conf", text, &cfg, err, sizeof(err)), 0), "%s",
		  err);
	cr_assert(eq(u32, cfg.nservers, 2));
	cr_assert(eq(str, cfg.servers[0].name, "a"));
	cr_assert(eq(str, cfg.servers[1].path, "/tmp/k.sock"));
	cr_assert(eq(str, cfg.auth_token, "s3cret"));
	cr_assert(eq(int, cfg.transport, KVDEX_TRANSPORT_TCP));
	cr_assert(eq(int, cfg.timeout_ms, 150));
	cr_assert(eq(u64, cfg.cluster_epoch, 9));
	kvdex_config_fini(&cfg);
}

struct bad_case {
	const char *text;
	const char *want; /* substring of the error */
};

/* 2: errors name the file and line. */
Test(config, errors_name_file_and_line)
{
	static const struct bad_case cases[] = {
		{"server = h:1\nbogus = 1\n", "k.conf:2: unknown key 'bogus'"},
		{"transport = rdma\n", "k.conf:1: transport"},
		{"\n\nserver = nope\n", "k.conf:3: bad server address 'nope'"},
		{"timeout_ms = -5\n", "k.conf:1: timeout_ms"},
		{"timeout_ms = 0\n", "k.conf:1: timeout_ms"},
		{"cluster_epoch = x\n", "k.conf:1: cluster_epoch"},
		{"server\n", "k.conf:1: expected 'key = value'"},
		{"server =\n", "k.conf:1: missing value"},
		{" = 3\n", "k.conf:1: missing key"},
		{"auth_token_file = /nonexistent/tok\n", "k.conf:1: auth_token_file"},
	};
	struct kvdex_client_config cfg;
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		cr_assert(eq(int,
			     kvdex_config_parse("k.conf", cases[i].text, &cfg, err, sizeof(err)),
			     -EINVAL),
			  "case %zu", i);
		cr_assert(not(eq(ptr, strstr(err, cases[i].want), NULL)), "case %zu: got '%s'", i,
			  err);
		cr_assert(eq(u32, cfg.nservers, 0));
	}
}

/* 3: auth_token_file relative to the config file; load() from disk. */
Test(config, token_file_and_load)
{
	char dir[] = "/tmp/kvdex-cfg-XXXXXX";
	char path[256], tok[256];
	struct kvdex_client_config cfg;
	char err[256] = "";
	FILE *f;

	cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
	snprintf(tok, sizeof(tok), "%s/token", dir);
	snprintf(path, sizeof(path), "%s/client.conf", dir);
	f = fopen(tok, "w");
	fputs("tok-123  \nsecond line\n", f);
	fclose(f);
	f = fopen(path, "w");
	fputs("server = h:1\nauth_token_file = token\n", f);
	fclose(f);
	cr_assert(eq(int, kvdex_config_load(path, &cfg, err, sizeof(err)), 0), "%s", err);
	cr_assert(eq(str, cfg.auth_token, "tok-123"));
	kvdex_config_fini(&cfg);
	cr_assert(lt(int, kvdex_config_load("/nonexistent/x.conf", &cfg, err, sizeof(err)), 0));
	cr_assert(not(eq(ptr, strstr(err, "/nonexistent/x.conf"), NULL)));
	unlink(tok);
	unlink(path);
	rmdir(dir);
}
