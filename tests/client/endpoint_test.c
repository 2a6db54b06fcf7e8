/* SPDX-License-Identifier: Apache-2.0 */
/* Server address parsing and the is-this-host check (client/src/endpoint.c). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdlib.h>

#include "client/src/internal.h"

TestSuite(endpoint, .timeout = 5);

/* 1: host:port, named, IPv6 literal, unix paths. */
Test(endpoint, parse_good)
{
	struct kvdex_endpoint ep;

	cr_assert(eq(int, kvdex_endpoint_parse("127.0.0.1:7400", &ep), 0));
	cr_assert(eq(int, ep.kind, KVDEX_TRANSPORT_TCP));
	cr_assert(eq(str, ep.host, "127.0.0.1"));
	cr_assert(eq(str, ep.port, "7400"));
	cr_assert(eq(str, ep.name, "127.0.0.1:7400"));

	cr_assert(eq(int, kvdex_endpoint_parse("mem1=db.local:1", &ep), 0));
	cr_assert(eq(str, ep.name, "mem1"));
	cr_assert(eq(str, ep.host, "db.local"));
	cr_assert(eq(str, ep.port, "1"));

	cr_assert(eq(int, kvdex_endpoint_parse("[::1]:65535", &ep), 0));
	cr_assert(eq(str, ep.host, "::1"));
	cr_assert(eq(str, ep.port, "65535"));

	cr_assert(eq(int, kvdex_endpoint_parse("unix:/tmp/a=b.sock", &ep), 0));
	cr_assert(eq(int, ep.kind, KVDEX_TRANSPORT_SHM));
	cr_assert(eq(str, ep.path, "/tmp/a=b.sock"));
	cr_assert(eq(str, ep.name, "unix:/tmp/a=b.sock"));

	cr_assert(eq(int, kvdex_endpoint_parse("s2=unix:/run/k.sock", &ep), 0));
	cr_assert(eq(str, ep.name, "s2"));
	cr_assert(eq(str, ep.path, "/run/k.sock"));
}

/* 2: malformed addresses are refused. */
Test(endpoint, parse_bad)
{
	static const char *const bad[] = {
		"",	  "host",    "host:",	 ":80",	  "host:0", "host:65536", "host:12x",
		"::1:80", "[::1]80", "=host:80", "unix:", "name=",  "h:123456",
	};
	struct kvdex_endpoint ep;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert(eq(int, kvdex_endpoint_parse(bad[i], &ep), -EINVAL), "'%s'", bad[i]);
	}
	cr_assert(eq(int, kvdex_endpoint_parse(NULL, &ep), -EINVAL));
}

/* 3: lists: commas, blanks, errors naming the bad entry. */
Test(endpoint, list)
{
	struct kvdex_endpoint *eps = NULL;
	char err[128] = "";
	unsigned n = 0;

	cr_assert(eq(int,
		     kvdex_endpoint_list_parse(" a=h:1 , unix:/x,h:2 ", &eps, &n, err, sizeof(err)),
		     0));
	cr_assert(eq(u32, n, 3));
	cr_assert(eq(str, eps[0].name, "a"));
	cr_assert(eq(str, eps[1].path, "/x"));
	cr_assert(eq(str, eps[2].port, "2"));
	free(eps);
	cr_assert(eq(int, kvdex_endpoint_list_parse("h:1,nope", &eps, &n, err, sizeof(err)),
		     -EINVAL));
	cr_assert(not(eq(ptr, strstr(err, "nope"), NULL)));
	cr_assert(eq(int, kvdex_endpoint_list_parse(" , ", &eps, &n, err, sizeof(err)), -EINVAL));
}

/* 4: loopback and this host's interface addresses are local; others not. */
Test(endpoint, host_is_local)
{
	cr_assert(eq(int, kvdex_host_is_local("127.0.0.1"), 1));
	cr_assert(eq(int, kvdex_host_is_local("127.3.4.5"), 1));
	cr_assert(eq(int, kvdex_host_is_local("::1"), 1));
	cr_assert(eq(int, kvdex_host_is_local("192.0.2.77"), 0)); /* TEST-NET-1 */
	cr_assert(eq(int, kvdex_host_is_local(""), 0));
}
