/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging (common/log.h): level parsing and names, clamping, the sink, level
 * filtering before formatting, errno preservation.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct captured {
	int n;
	int level;
	char component[32];
	char msg[256];
};

static struct captured cap;

static void
capture_sink(int level, const char *component, const char *msg, void *arg)
{
	struct captured *c = arg;

	c->n++;
	c->level = level;
	snprintf(c->component, sizeof(c->component), "%s", component);
	snprintf(c->msg, sizeof(c->msg), "%s", msg);
}

static void
setup(void)
{
	memset(&cap, 0, sizeof(cap));
	kvdex_log_set_sink(capture_sink, &cap);
}

static void
teardown(void)
{
	kvdex_log_set_sink(NULL, NULL);
	kvdex_log_set_level(KVDEX_LOG_LVL_OFF);
}

TestSuite(log, .init = setup, .fini = teardown, .timeout = 10);

/* 1. Names parse, case-insensitively. */
Test(log, parse_names)
{
	cr_assert(eq(i32, kvdex_log_parse_level("off"), KVDEX_LOG_LVL_OFF));
	cr_assert(eq(i32, kvdex_log_parse_level("err"), KVDEX_LOG_LVL_ERR));
	cr_assert(eq(i32, kvdex_log_parse_level("warn"), KVDEX_LOG_LVL_WARN));
	cr_assert(eq(i32, kvdex_log_parse_level("notice"), KVDEX_LOG_LVL_NOTICE));
	cr_assert(eq(i32, kvdex_log_parse_level("info"), KVDEX_LOG_LVL_INFO));
	cr_assert(eq(i32, kvdex_log_parse_level("debug"), KVDEX_LOG_LVL_DEBUG));
	cr_assert(eq(i32, kvdex_log_parse_level("WARN"), KVDEX_LOG_LVL_WARN));
	cr_assert(eq(i32, kvdex_log_parse_level("Debug"), KVDEX_LOG_LVL_DEBUG));
}

/* 2. Numbers 0..7 parse as themselves. */
Test(log, parse_numbers)
{
	cr_assert(eq(i32, kvdex_log_parse_level("0"), 0));
	cr_assert(eq(i32, kvdex_log_parse_level("3"), 3));
	cr_assert(eq(i32, kvdex_log_parse_level("5"), 5));
	cr_assert(eq(i32, kvdex_log_parse_level("7"), 7));
}

/* 3. Anything else is -EINVAL. */
Test(log, parse_invalid)
{
	static const char *const bad[] = {"",	   "8",	      "-1",  "99",    "3x",   "x3",
					  "error", "warning", "dbg", " info", "info "};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert(eq(i32, kvdex_log_parse_level(bad[i]), -EINVAL), "\"%s\"", bad[i]);
	}
}

/* 4. Names of levels, "?" for the rest; parse(name(l)) == l. */
Test(log, level_names)
{
	static const int lv[] = {0, 3, 4, 5, 6, 7};

	cr_assert(eq(str, (char *)kvdex_log_level_name(KVDEX_LOG_LVL_NOTICE), "notice"));
	cr_assert(eq(str, (char *)kvdex_log_level_name(1), "?"));
	cr_assert(eq(str, (char *)kvdex_log_level_name(8), "?"));
	cr_assert(eq(str, (char *)kvdex_log_level_name(-1), "?"));
	for (size_t i = 0; i < 6; i++) {
		cr_assert(eq(i32, kvdex_log_parse_level(kvdex_log_level_name(lv[i])), lv[i]));
	}
}

/* 5. set_level clamps into [OFF, DEBUG]. */
Test(log, set_level_clamps)
{
	kvdex_log_set_level(100);
	cr_assert(eq(i32, kvdex_log_cur_level, KVDEX_LOG_LVL_DEBUG));
	kvdex_log_set_level(-5);
	cr_assert(eq(i32, kvdex_log_cur_level, KVDEX_LOG_LVL_OFF));
	kvdex_log_set_level(KVDEX_LOG_LVL_INFO);
	cr_assert(eq(i32, kvdex_log_cur_level, KVDEX_LOG_LVL_INFO));
}

/* 6. Messages at or below the level reach the sink with func:line; the
 * rest are filtered. errno survives logging. */
Test(log, sink_and_filter)
{
	kvdex_log_set_level(KVDEX_LOG_LVL_WARN);
	errno = EXDEV;
	KVDEX_LOG_ERR("test", "value %d", 42);
	cr_assert(eq(i32, errno, EXDEV));
	cr_assert(eq(i32, cap.n, 1));
	cr_assert(eq(i32, cap.level, KVDEX_LOG_LVL_ERR));
	cr_assert(eq(str, cap.component, "test"));
	cr_assert(not(eq(ptr, strstr(cap.msg, "value 42"), NULL)), "msg: %s", cap.msg);
	cr_assert(not(eq(ptr, strstr(cap.msg, "sink_and_filter"), NULL)), "msg: %s", cap.msg);
	KVDEX_LOG_WARN("test", "w");
	cr_assert(eq(i32, cap.n, 2));
	KVDEX_LOG_NOTICE("test", "n");
	KVDEX_LOG_INFO("test", "i");
	cr_assert(eq(i32, cap.n, 2));
	kvdex_log_set_level(KVDEX_LOG_LVL_OFF);
	KVDEX_LOG_ERR("test", "e");
	cr_assert(eq(i32, cap.n, 2));
}

/* 7. The environment variable sets the level; a bad value is ignored. */
Test(log, init_from_env)
{
	kvdex_log_set_level(KVDEX_LOG_LVL_ERR);
	setenv("KVDEX_LOG_LEVEL", "info", 1);
	kvdex_log_init_from_env();
	cr_assert(eq(i32, kvdex_log_cur_level, KVDEX_LOG_LVL_INFO));
	setenv("KVDEX_LOG_LEVEL", "bogus", 1);
	kvdex_log_init_from_env();
	cr_assert(eq(i32, kvdex_log_cur_level, KVDEX_LOG_LVL_INFO));
	unsetenv("KVDEX_LOG_LEVEL");
	kvdex_log_init_from_env();
	cr_assert(eq(i32, kvdex_log_cur_level, KVDEX_LOG_LVL_INFO));
}

/* 8. The rate limiter lets the first message of a call site through and
 * drops the immediate repeats. */
Test(log, ratelimit)
{
	kvdex_log_set_level(KVDEX_LOG_LVL_DEBUG);
	for (int i = 0; i < 10; i++) {
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 3600, "test", "burst %d", i);
	}
	cr_assert(eq(i32, cap.n, 1));
	cr_assert(not(eq(ptr, strstr(cap.msg, "burst 0"), NULL)));
}
