/* SPDX-License-Identifier: Apache-2.0 */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

int kvdex_log_cur_level = KVDEX_LOG_LVL_OFF;

static kvdex_log_sink_fn log_sink;
static void *log_sink_arg;

static const char *const level_names[] = {
	[KVDEX_LOG_LVL_OFF] = "off",   [KVDEX_LOG_LVL_ERR] = "err",
	[KVDEX_LOG_LVL_WARN] = "warn", [KVDEX_LOG_LVL_NOTICE] = "notice",
	[KVDEX_LOG_LVL_INFO] = "info", [KVDEX_LOG_LVL_DEBUG] = "debug",
};

void
kvdex_log_set_level(int level)
{
	if (level < KVDEX_LOG_LVL_OFF) {
		level = KVDEX_LOG_LVL_OFF;
	}
	if (level > KVDEX_LOG_LVL_DEBUG) {
		level = KVDEX_LOG_LVL_DEBUG;
	}
	kvdex_log_cur_level = level;
}

int
kvdex_log_parse_level(const char *s)
{
	char *end;
	long v;

	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (level_names[i] != NULL && strcasecmp(s, level_names[i]) == 0) {
			return (int)i;
		}
	}
	v = strtol(s, &end, 10);
	if (*s != '\0' && *end == '\0' && v >= 0 && v <= KVDEX_LOG_LVL_DEBUG) {
		return (int)v;
	}
	return -EINVAL;
}

const char *
kvdex_log_level_name(int level)
{
	if (level >= 0 && level <= KVDEX_LOG_LVL_DEBUG && level_names[level] != NULL) {
		return level_names[level];
	}
	return "?";
}

void
kvdex_log_set_sink(kvdex_log_sink_fn fn, void *arg)
{
	log_sink = fn;
	log_sink_arg = arg;
}

void
kvdex_log_init_from_env(void)
{
	const char *s = getenv("KVDEX_LOG_LEVEL");
	int lvl;

	if (s == NULL) {
		return;
	}
	lvl = kvdex_log_parse_level(s);
	if (lvl >= 0) {
		kvdex_log_set_level(lvl);
	}
}

static void
log_default_sink(int level, const char *component, const char *msg)
{
	struct timeval tv;
	struct tm tm;
	char ts[32];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %-6s %s: %s\n", ts, (long)(tv.tv_usec / 1000),
		kvdex_log_level_name(level), component, msg);
}

void
kvdex_log_write(int level, const char *component, const char *func, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int n;

	n = snprintf(msg, sizeof(msg), "%s:%d: ", func, line);
	if (n < 0 || (size_t)n >= sizeof(msg)) {
		n = 0;
	}
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	if (log_sink != NULL) {
		log_sink(level, component, msg, log_sink_arg);
	} else {
		log_default_sink(level, component, msg);
	}
}
