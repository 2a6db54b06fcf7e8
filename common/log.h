/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging for the daemon, the tools and the library.
 *
 * KVDEX_LOG_{ERR,WARN,NOTICE,INFO,DEBUG}(component, fmt, ...) check the level
 * before formatting, add __func__:__LINE__ and preserve errno. DEBUG compiles
 * out unless KVDEX_DEBUG is defined. KVDEX_LOG_RATELIMIT lets at most one
 * message through per call site per interval; hot paths count instead.
 *
 * The library is silent by default (level KVDEX_LOG_LVL_OFF): the host
 * installs a sink with kvdex_set_log_fn() or sets KVDEX_LOG_LEVEL in the
 * environment; nothing goes to stdout.
 */
#ifndef KVDEX_COMMON_LOG_H
#define KVDEX_COMMON_LOG_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kvdex_log_level {
	KVDEX_LOG_LVL_OFF = 0,
	KVDEX_LOG_LVL_ERR = 3,
	KVDEX_LOG_LVL_WARN = 4,
	KVDEX_LOG_LVL_NOTICE = 5,
	KVDEX_LOG_LVL_INFO = 6,
	KVDEX_LOG_LVL_DEBUG = 7,
};

typedef void (*kvdex_log_sink_fn)(int level, const char *component, const char *msg, void *arg);

extern int kvdex_log_cur_level;

void kvdex_log_set_level(int level);
/* Parse "err|warn|notice|info|debug|off" or a number; -EINVAL if unknown. */
int kvdex_log_parse_level(const char *s);
const char *kvdex_log_level_name(int level);
/* NULL restores the default sink (stderr with a timestamp). */
void kvdex_log_set_sink(kvdex_log_sink_fn fn, void *arg);
/* Apply KVDEX_LOG_LEVEL from the environment, if set. */
void kvdex_log_init_from_env(void);

void kvdex_log_write(int level, const char *component, const char *func, int line, const char *fmt,
		     ...) __attribute__((format(printf, 5, 6)));

#define KVDEX_LOG(lvl, comp, ...)                                                                  \
	do {                                                                                       \
		if ((lvl) <= kvdex_log_cur_level) {                                                \
			int kvdex_saved_errno_ = errno;                                            \
			kvdex_log_write((lvl), (comp), __func__, __LINE__, __VA_ARGS__);           \
			errno = kvdex_saved_errno_;                                                \
		}                                                                                  \
	} while (0)

#define KVDEX_LOG_ERR(comp, ...) KVDEX_LOG(KVDEX_LOG_LVL_ERR, comp, __VA_ARGS__)
#define KVDEX_LOG_WARN(comp, ...) KVDEX_LOG(KVDEX_LOG_LVL_WARN, comp, __VA_ARGS__)
#define KVDEX_LOG_NOTICE(comp, ...) KVDEX_LOG(KVDEX_LOG_LVL_NOTICE, comp, __VA_ARGS__)
#define KVDEX_LOG_INFO(comp, ...) KVDEX_LOG(KVDEX_LOG_LVL_INFO, comp, __VA_ARGS__)
#ifdef KVDEX_DEBUG
#define KVDEX_LOG_DEBUG(comp, ...) KVDEX_LOG(KVDEX_LOG_LVL_DEBUG, comp, __VA_ARGS__)
#else
#define KVDEX_LOG_DEBUG(comp, ...)                                                                 \
	do {                                                                                       \
	} while (0)
#endif

/* At most one message per call site every `secs` seconds. */
#define KVDEX_LOG_RATELIMIT(lvl, secs, comp, ...)                                                  \
	do {                                                                                       \
		static time_t kvdex_rl_last_;                                                      \
		time_t kvdex_rl_now_ = time(NULL);                                                 \
		if ((lvl) <= kvdex_log_cur_level &&                                                \
		    kvdex_rl_now_ - kvdex_rl_last_ >= (time_t)(secs)) {                            \
			kvdex_rl_last_ = kvdex_rl_now_;                                            \
			KVDEX_LOG(lvl, comp, __VA_ARGS__);                                         \
		}                                                                                  \
	} while (0)

/* Daemon only: an impossible state. Logs and aborts. */
#define KVDEX_DIE(comp, ...)                                                                       \
	do {                                                                                       \
		kvdex_log_write(KVDEX_LOG_LVL_ERR, (comp), __func__, __LINE__, __VA_ARGS__);       \
		abort();                                                                           \
	} while (0)

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_COMMON_LOG_H */
