/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client config file: `key = value` lines, `#` comments, blank lines.
 *
 *   server = [name=]address     repeatable; host:port or unix:/path
 *   auth_token = TOKEN | auth_token_file = PATH
 *   transport = auto|shm|tcp
 *   timeout_ms = N
 *   cluster_epoch = N
 *
 * Every error names "file:line". auth_token_file is read at parse time (its
 * first line, trailing whitespace removed); a relative path is relative to
 * the config file's directory. Options given to kvdex_client_create()
 * override the file.
 */
#include "client/src/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cfg_ctx {
	const char *name;
	unsigned line;
	char *err;
	size_t errlen;
};

static int cfg_fail(struct cfg_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
cfg_fail(struct cfg_ctx *x, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(x->err, x->errlen, "%s:%u: ", x->name, x->line);
	if (n < 0 || (size_t)n >= x->errlen) {
		return -EINVAL;
	}
	va_start(ap, fmt);
	vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int
parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s == '\0' || *s == '-') {
		return -EINVAL;
	}
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno != 0 || *end != '\0') {
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static char *
strip_line(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t') {
		s++;
	}
	end = s + strlen(s);
	while (end > s &&
	       (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n')) {
		*--end = '\0';
	}
	return s;
}

static int
read_token_file(struct cfg_ctx *x, const char *path, char **out)
{
	char full[4096];
	char buf[1024];
	const char *slash = strrchr(x->name, '/');
	FILE *f;
	char *tok;

	if (path[0] != '/' && slash != NULL) {
		snprintf(full, sizeof(full), "%.*s/%s", (int)(slash - x->name), x->name, path);
	} else {
		snprintf(full, sizeof(full), "%s", path);
	}
	f = fopen(full, "re");
	if (f == NULL) {
		return cfg_fail(x, "auth_token_file '%s': %s", full, strerror(errno));
	}
	if (fgets(buf, sizeof(buf), f) == NULL) {
		buf[0] = '\0';
	}
	fclose(f);
	tok = strip_line(buf);
	if (tok[0] == '\0') {
		return cfg_fail(x, "auth_token_file '%s' is empty", full);
	}
	*out = strdup(tok);
	return *out != NULL ? 0 : -ENOMEM;
}

static int
cfg_add_server(struct cfg_ctx *x, struct kvdex_client_config *cfg, const char *val)
{
	struct kvdex_endpoint *tmp;

	if (cfg->nservers >= KVDEX_MAX_SERVERS) {
		return cfg_fail(x, "more than %u servers", KVDEX_MAX_SERVERS);
	}
	tmp = realloc(cfg->servers, (cfg->nservers + 1) * sizeof(*tmp));
	if (tmp == NULL) {
		return -ENOMEM;
	}
	cfg->servers = tmp;
	if (kvdex_endpoint_parse(val, &cfg->servers[cfg->nservers]) < 0) {
		return cfg_fail(x, "bad server address '%s'", val);
	}
	cfg->nservers++;
	return 0;
}

static int
cfg_set_token(struct cfg_ctx *x, struct kvdex_client_config *cfg, const char *key, const char *val)
{
	char *tok = NULL;
	int rc;

	if (strcmp(key, "auth_token") == 0) {
		tok = strdup(val);
		if (tok == NULL) {
			return -ENOMEM;
		}
	} else {
		rc = read_token_file(x, val, &tok);
		if (rc < 0) {
			return rc;
		}
	}
	free(cfg->auth_token);
	cfg->auth_token = tok;
	return 0;
}

static int
cfg_apply(struct cfg_ctx *x, struct kvdex_client_config *cfg, const char *key, const char *val)
{
	uint64_t v;

	if (strcmp(key, "server") == 0) {
		return cfg_add_server(x, cfg, val);
	}
	if (strcmp(key, "auth_token") == 0 || strcmp(key, "auth_token_file") == 0) {
		return cfg_set_token(x, cfg, key, val);
	}
	if (strcmp(key, "transport") == 0) {
		if (strcmp(val, "auto") == 0) {
			cfg->transport = KVDEX_TRANSPORT_AUTO;
		} else if (strcmp(val, "shm") == 0) {
			cfg->transport = KVDEX_TRANSPORT_SHM;
		} else if (strcmp(val, "tcp") == 0) {
			cfg->transport = KVDEX_TRANSPORT_TCP;
		} else if (strcmp(val, "verbs") == 0) {
			cfg->transport = KVDEX_TRANSPORT_VERBS;
		} else {
			return cfg_fail(x, "transport must be auto, shm, tcp or verbs, not '%s'",
					val);
		}
		return 0;
	}
	if (strcmp(key, "timeout_ms") == 0) {
		if (parse_u64(val, &v) < 0 || v == 0 || v > 3600000) {
			return cfg_fail(x, "timeout_ms must be 1..3600000, not '%s'", val);
		}
		cfg->timeout_ms = (int)v;
		return 0;
	}
	if (strcmp(key, "cluster_epoch") == 0) {
		if (parse_u64(val, &v) < 0 || v == 0) {
			return cfg_fail(x, "cluster_epoch must be a positive integer, not '%s'",
					val);
		}
		cfg->cluster_epoch = v;
		return 0;
	}
	return cfg_fail(x, "unknown key '%s'", key);
}

static int
cfg_line(struct cfg_ctx *x, struct kvdex_client_config *cfg, char *line)
{
	char *eq, *key, *val;

	line = strip_line(line);
	if (line[0] == '\0' || line[0] == '#') {
		return 0;
	}
	eq = strchr(line, '=');
	if (eq == NULL) {
		return cfg_fail(x, "expected 'key = value'");
	}
	*eq = '\0';
	key = strip_line(line);
	val = strip_line(eq + 1);
	if (key[0] == '\0') {
		return cfg_fail(x, "missing key before '='");
	}
	if (val[0] == '\0') {
		return cfg_fail(x, "missing value for '%s'", key);
	}
	return cfg_apply(x, cfg, key, val);
}

static void
cfg_init(struct kvdex_client_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->transport = -1;
	cfg->timeout_ms = -1;
}

void
kvdex_config_fini(struct kvdex_client_config *cfg)
{
	if (cfg == NULL) {
		return;
	}
	free(cfg->servers);
	free(cfg->auth_token);
	cfg_init(cfg);
}

int
kvdex_config_parse(const char *name, const char *text, struct kvdex_client_config *cfg, char *err,
		   size_t errlen)
{
	struct cfg_ctx x = {.name = name, .line = 0, .err = err, .errlen = errlen};
	const char *p = text;
	int rc = 0;

	cfg_init(cfg);
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		char *line = strndup(p, len);

		x.line++;
		if (line == NULL) {
			rc = -ENOMEM;
			break;
		}
		rc = cfg_line(&x, cfg, line);
		free(line);
		if (rc < 0) {
			break;
		}
		p += len + (nl != NULL ? 1 : 0);
	}
	if (rc < 0) {
		kvdex_config_fini(cfg);
	}
	return rc;
}

int
kvdex_config_load(const char *path, struct kvdex_client_config *cfg, char *err, size_t errlen)
{
	char *text = NULL;
	size_t cap = 0;
	FILE *f;
	ssize_t n;
	int rc;

	f = fopen(path, "re");
	if (f == NULL) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		cfg_init(cfg);
		return rc;
	}
	/* Slurp: config files are small. */
	n = getdelim(&text, &cap, '\0', f);
	fclose(f);
	if (n < 0) {
		free(text);
		text = strdup("");
		if (text == NULL) {
			return -ENOMEM;
		}
	}
	rc = kvdex_config_parse(path, text, cfg, err, errlen);
	free(text);
	return rc;
}
