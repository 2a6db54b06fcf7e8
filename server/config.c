/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdexd configuration (see config.h).
 *
 * One table lists every option: its name (the flag without "--" and the
 * config-file key), argument, default, meaning, kind and bounds. Parsing a
 * flag and parsing a file line both end in kvdex_config_set(), so the two
 * accept exactly the same values, and --help prints the same table.
 *
 * Precedence: defaults < config file < flags. Within one source the last
 * setting wins; auth-token and auth-token-file replace each other.
 */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfgline.h"
#include "common/layout.h"
#include "common/log.h"

#ifndef KVDEX_VERSION
#define KVDEX_VERSION "0.0.0"
#endif

enum opt_kind {
	OPT_NUM,
	OPT_STR,
	OPT_TCP,
	OPT_RDMA,
	OPT_UNIX,
	OPT_TOKEN,
	OPT_TOKEN_FILE,
	OPT_LOG_LEVEL,
	OPT_BUCKET,
};

struct opt_desc {
	const char *name;
	const char *arg;
	const char *def;
	const char *help;
	enum opt_kind kind;
	size_t off;  /* field offset */
	size_t size; /* OPT_STR: buffer size */
	uint64_t min;
	uint64_t max;
};

#define F(field) offsetof(struct kvdex_config, field)
#define SZ(field) sizeof(((struct kvdex_config *)0)->field)

static const struct opt_desc opts[] = {
	{"listen-tcp", "HOST:PORT", "127.0.0.1:7400",
	 "tcp listener; port 0 lets the kernel pick; \"none\" disables it", OPT_TCP, 0, 0, 0, 0},
	{"listen-rdma", "HOST:PORT|auto|none", "auto",
	 "rdma_cm listener for the verbs transport (RDMA READ of the index, SEND/RECV "
	 "messages); auto: if the host has an RDMA device, the tcp host with the tcp port + 1, "
	 "and a bind failure is only a warning; an explicit address that cannot be bound is "
	 "fatal; port 0 lets rdma_cm pick",
	 OPT_RDMA, 0, 0, 0, 0},
	{"listen-unix", "PATH", "/tmp/kvdexd-<tcp port>.sock",
	 "unix socket (shm clients get the region fd here); /tmp/kvdexd.sock if tcp is none; "
	 "\"none\" disables it",
	 OPT_UNIX, 0, 0, 0, 0},
	{"server-id", "NAME", "<hostname>:<port>", "stable name of this memory server", OPT_STR,
	 F(server_id), SZ(server_id), 0, 0},
	{"cluster-epoch", "N", "1", "cluster map epoch announced in Hello replies", OPT_NUM,
	 F(cluster_epoch), 0, 0, UINT64_MAX},
	{"auth-token", "TOKEN", "none", "token clients must present in Hello", OPT_TOKEN, 0, 0, 0,
	 0},
	{"auth-token-file", "FILE", "none", "read the auth token from FILE (first line)",
	 OPT_TOKEN_FILE, 0, 0, 0, 0},
	{"capacity-blocks", "N", "1048576",
	 "blocks to size the first table for (home buckets = N/4, rounded up to a power of 2)",
	 OPT_NUM, F(capacity_blocks), 0, 1, 1ull << 36},
	{"bucket-size", "N", "512", "bucket bytes: a power of two from 128 to 4096", OPT_BUCKET,
	 F(bucket_size), 0, 128, 4096},
	{"max-region-mb", "N", "4096", "largest the index region may grow (MiB)", OPT_NUM,
	 F(max_region_mb), 0, 1, 1ull << 24},
	{"max-workers", "N", "4096", "worker table rows (one per worker dp rank)", OPT_NUM,
	 F(max_workers), 0, 1, 65535},
	{"max-namespaces", "N", "1024", "namespaces this server accepts", OPT_NUM,
	 F(max_namespaces), 0, 1, 65535},
	{"max-batch-events", "N", "65536", "events per Publish batch", OPT_NUM, F(max_batch_events),
	 0, 1, 1ull << 24},
	{"max-msg-bytes", "N", "4194304", "largest frame payload accepted", OPT_NUM,
	 F(max_msg_bytes), 0, 4096, 1ull << 30},
	{"max-conns", "N", "1024", "connections served at once; more are accepted and closed",
	 OPT_NUM, F(max_conns), 0, 1, 1ull << 20},
	{"spec-ttl-ms", "N", "2000", "default lifetime of speculative holders (max 7500)", OPT_NUM,
	 F(spec_ttl_ms), 0, 1, 7500},
	{"sweep-buckets-per-tick", "N", "4096",
	 "chains the background sweep visits every 1/16 s after a clear", OPT_NUM,
	 F(sweep_buckets_per_tick), 0, 1, 1ull << 31},
	{"log-level", "LEVEL", "notice", "err|warn|notice|info|debug (logs go to stderr)",
	 OPT_LOG_LEVEL, 0, 0, 0, 0},
	{"ready-file", "PATH", "none",
	 "written atomically once listening: pid=, tcp=host:port, unix=path, rdma=host:port lines",
	 OPT_STR, F(ready_file), SZ(ready_file), 0, 0},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static void
errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void
kvdex_config_defaults(struct kvdex_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->tcp_enabled = true;
	snprintf(cfg->tcp_host, sizeof(cfg->tcp_host), "127.0.0.1");
	cfg->tcp_port = 7400;
	cfg->unix_enabled = true;
	cfg->cluster_epoch = 1;
	cfg->capacity_blocks = 1048576;
	cfg->bucket_size = KVDEX_BUCKET_SIZE_DEFAULT;
	cfg->max_region_mb = 4096;
	cfg->max_workers = 4096;
	cfg->max_namespaces = 1024;
	cfg->max_batch_events = 65536;
	cfg->max_msg_bytes = 4194304;
	cfg->max_conns = 1024;
	cfg->spec_ttl_ms = 2000;
	cfg->sweep_buckets_per_tick = 4096;
	cfg->log_level = KVDEX_LOG_LVL_NOTICE;
}

static const struct opt_desc *
opt_find(const char *name)
{
	for (size_t i = 0; i < NOPTS; i++) {
		if (strcmp(opts[i].name, name) == 0) {
			return &opts[i];
		}
	}
	return NULL;
}

static int
parse_u64(const char *s, uint64_t *v)
{
	char *end;

	if (!isdigit((unsigned char)s[0])) {
		return -EINVAL;
	}
	errno = 0;
	*v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0') {
		return -EINVAL;
	}
	return 0;
}

/* Parse "host:port" or "[v6]:port" into host (NUL-terminated, < cap bytes)
 * and port: 0 or -EINVAL. */
static int
parse_host_port(const char *val, char *host, size_t cap, uint16_t *port)
{
	const char *colon = strrchr(val, ':');
	const char *h = val;
	uint64_t p;
	size_t hlen;

	if (colon == NULL || parse_u64(colon + 1, &p) != 0 || p > 65535) {
		return -EINVAL;
	}
	hlen = (size_t)(colon - val);
	if (hlen >= 2 && val[0] == '[' && val[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= cap) {
		return -EINVAL;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)p;
	return 0;
}

static int
set_tcp(struct kvdex_config *cfg, const char *val)
{
	if (strcmp(val, "none") == 0) {
		cfg->tcp_enabled = false;
		return 0;
	}
	if (parse_host_port(val, cfg->tcp_host, sizeof(cfg->tcp_host), &cfg->tcp_port) != 0) {
		return -EINVAL;
	}
	cfg->tcp_enabled = true;
	return 0;
}

static int
set_rdma(struct kvdex_config *cfg, const char *val)
{
	if (strcmp(val, "none") == 0 || strcmp(val, "auto") == 0) {
		cfg->rdma_mode = val[0] == 'n' ? KVDEX_RDMA_NONE : KVDEX_RDMA_AUTO;
		cfg->rdma_host[0] = '\0';
		cfg->rdma_port = 0;
		return 0;
	}
	if (parse_host_port(val, cfg->rdma_host, sizeof(cfg->rdma_host), &cfg->rdma_port) != 0) {
		return -EINVAL;
	}
	cfg->rdma_mode = KVDEX_RDMA_ADDR;
	return 0;
}

static int
set_unix(struct kvdex_config *cfg, const char *val)
{
	if (strcmp(val, "none") == 0) {
		cfg->unix_enabled = false;
		cfg->unix_path[0] = '\0';
		return 0;
	}
	if (val[0] == '\0' || strlen(val) >= sizeof(cfg->unix_path)) {
		return -EINVAL;
	}
	snprintf(cfg->unix_path, sizeof(cfg->unix_path), "%s", val);
	cfg->unix_enabled = true;
	return 0;
}

static int
set_str(char *dst, size_t size, const char *val)
{
	if (strlen(val) >= size) {
		return -EINVAL;
	}
	memcpy(dst, val, strlen(val) + 1);
	return 0;
}

static int
set_num(struct kvdex_config *cfg, const struct opt_desc *o, const char *val, const char *where,
	char *err, size_t errlen)
{
	uint64_t v;

	if (parse_u64(val, &v) != 0) {
		errf(err, errlen, "%s: %s: '%s' is not a number", where, o->name, val);
		return -EINVAL;
	}
	if (v < o->min || v > o->max) {
		errf(err, errlen, "%s: %s: %llu is out of range [%llu, %llu]", where, o->name,
		     (unsigned long long)v, (unsigned long long)o->min, (unsigned long long)o->max);
		return -EINVAL;
	}
	if (o->kind == OPT_BUCKET && (v & (v - 1)) != 0) {
		errf(err, errlen, "%s: %s: %llu is not a power of two", where, o->name,
		     (unsigned long long)v);
		return -EINVAL;
	}
	memcpy((char *)cfg + o->off, &v, sizeof(v));
	return 0;
}

static int
set_other(struct kvdex_config *cfg, const struct opt_desc *o, const char *val)
{
	int lvl;

	switch (o->kind) {
	case OPT_TCP:
		return set_tcp(cfg, val);
	case OPT_RDMA:
		return set_rdma(cfg, val);
	case OPT_UNIX:
		return set_unix(cfg, val);
	case OPT_STR:
		return set_str((char *)cfg + o->off, o->size, val);
	case OPT_TOKEN:
		cfg->auth_token_file[0] = '\0';
		return set_str(cfg->auth_token, sizeof(cfg->auth_token), val);
	case OPT_TOKEN_FILE:
		cfg->auth_token[0] = '\0';
		return set_str(cfg->auth_token_file, sizeof(cfg->auth_token_file), val);
	case OPT_LOG_LEVEL:
		lvl = kvdex_log_parse_level(val);
		if (lvl < KVDEX_LOG_LVL_ERR) {
			return -EINVAL;
		}
		cfg->log_level = lvl;
		return 0;
	default:
		return -EINVAL;
	}
}

int
kvdex_config_set(struct kvdex_config *cfg, const char *key, const char *val, const char *where,
		 char *err, size_t errlen)
{
	const struct opt_desc *o = opt_find(key);

	if (o == NULL) {
		errf(err, errlen, "%s: unknown option '%s'", where, key);
		return -EINVAL;
	}
	if (o->kind == OPT_NUM || o->kind == OPT_BUCKET) {
		return set_num(cfg, o, val, where, err, errlen);
	}
	if (set_other(cfg, o, val) != 0) {
		errf(err, errlen, "%s: %s: invalid value '%s' (expected %s)", where, o->name, val,
		     o->arg);
		return -EINVAL;
	}
	return 0;
}

static int
config_line(struct kvdex_config *cfg, char *line, const char *where, char *err, size_t errlen)
{
	char *eq;
	char *key;
	char *val;
	size_t n;

	line = kvdex_cfg_clean(line);
	if (*line == '\0') {
		return 0;
	}
	eq = strchr(line, '=');
	if (eq == NULL) {
		errf(err, errlen, "%s: expected 'key = value', got '%s'", where, line);
		return -EINVAL;
	}
	*eq = '\0';
	key = kvdex_cfg_trim(line);
	val = kvdex_cfg_trim(eq + 1);
	n = strlen(val);
	if (n >= 2 && val[0] == '"' && val[n - 1] == '"') {
		val[n - 1] = '\0';
		val++;
	}
	if (strcmp(key, "config") == 0) {
		errf(err, errlen, "%s: 'config' cannot be set from a config file", where);
		return -EINVAL;
	}
	return kvdex_config_set(cfg, key, val, where, err, errlen);
}

int
kvdex_config_load_file(struct kvdex_config *cfg, const char *path, char *err, size_t errlen)
{
	char line[8192];
	char where[KVDEX_CFG_PATH + 32];
	unsigned lineno = 0;
	FILE *f;
	int rc = 0;

	f = fopen(path, "r");
	if (f == NULL) {
		rc = -errno;
		errf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		snprintf(where, sizeof(where), "%s:%u", path, lineno);
		if (strchr(line, '\n') == NULL && !feof(f)) {
			errf(err, errlen, "%s: line too long", where);
			rc = -EINVAL;
			break;
		}
		rc = config_line(cfg, line, where, err, errlen);
	}
	fclose(f);
	return rc;
}

static int
read_token_file(struct kvdex_config *cfg, char *err, size_t errlen)
{
	char buf[KVDEX_TOKEN_MAX + 2];
	FILE *f = fopen(cfg->auth_token_file, "r");
	char *tok;

	if (f == NULL) {
		errf(err, errlen, "auth-token-file %s: %s", cfg->auth_token_file, strerror(errno));
		return -EINVAL;
	}
	if (fgets(buf, sizeof(buf), f) == NULL) {
		buf[0] = '\0';
	}
	fclose(f);
	tok = kvdex_cfg_trim(buf);
	if (*tok == '\0' || strlen(tok) >= sizeof(cfg->auth_token)) {
		errf(err, errlen, "auth-token-file %s: empty or longer than %u bytes",
		     cfg->auth_token_file, KVDEX_TOKEN_MAX - 1);
		return -EINVAL;
	}
	memcpy(cfg->auth_token, tok, strlen(tok) + 1);
	return 0;
}

static bool
is_flag(const char *a, const char *s, const char *l)
{
	return strcmp(a, s) == 0 || strcmp(a, l) == 0;
}

/* Split "--name=value" / "--name value". Returns the index of the last
 * argv element consumed, or -1 (err filled). */
static int
flag_value(int argc, char **argv, int i, char *name, size_t nlen, const char **val, char *err,
	   size_t errlen)
{
	const char *a = argv[i] + 2;
	const char *eq = strchr(a, '=');
	size_t n = eq != NULL ? (size_t)(eq - a) : strlen(a);

	if (n >= nlen) {
		errf(err, errlen, "unknown option '%s'", argv[i]);
		return -1;
	}
	memcpy(name, a, n);
	name[n] = '\0';
	if (strcmp(name, "config") != 0 && opt_find(name) == NULL) {
		errf(err, errlen, "unknown option '--%s'", name);
		return -1;
	}
	if (eq != NULL) {
		*val = eq + 1;
		return i;
	}
	if (i + 1 >= argc) {
		errf(err, errlen, "--%s needs an argument", name);
		return -1;
	}
	*val = argv[i + 1];
	return i + 1;
}

/* First pass: --help, --version and --config. */
static int
scan_special(struct kvdex_config *cfg, int argc, char **argv, FILE *out, char *err, size_t errlen)
{
	for (int i = 1; i < argc; i++) {
		char name[64];
		const char *val;
		int last;

		if (is_flag(argv[i], "-h", "--help")) {
			kvdex_config_usage(out);
			return 1;
		}
		if (is_flag(argv[i], "-V", "--version")) {
			fprintf(out, "kvdexd %s\n", KVDEX_VERSION);
			return 1;
		}
		if (strncmp(argv[i], "--", 2) != 0) {
			continue;
		}
		last = flag_value(argc, argv, i, name, sizeof(name), &val, err, errlen);
		if (last < 0) {
			return -EINVAL;
		}
		if (strcmp(name, "config") == 0 &&
		    set_str(cfg->config_path, sizeof(cfg->config_path), val) != 0) {
			errf(err, errlen, "--config: path too long");
			return -EINVAL;
		}
		i = last;
	}
	return 0;
}

static int
apply_flags(struct kvdex_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
	for (int i = 1; i < argc; i++) {
		char name[64];
		char where[80];
		const char *val;
		int last;

		if (strncmp(argv[i], "--", 2) != 0) {
			errf(err, errlen, "unexpected argument '%s'", argv[i]);
			return -EINVAL;
		}
		last = flag_value(argc, argv, i, name, sizeof(name), &val, err, errlen);
		if (last < 0) {
			return -EINVAL;
		}
		i = last;
		if (strcmp(name, "config") == 0) {
			continue;
		}
		snprintf(where, sizeof(where), "--%s", name);
		if (kvdex_config_set(cfg, name, val, where, err, errlen) != 0) {
			return -EINVAL;
		}
	}
	return 0;
}

int
kvdex_config_parse_args(struct kvdex_config *cfg, int argc, char **argv, FILE *out, char *err,
			size_t errlen)
{
	int rc;

	kvdex_config_defaults(cfg);
	rc = scan_special(cfg, argc, argv, out, err, errlen);
	if (rc != 0) {
		return rc;
	}
	if (cfg->config_path[0] != '\0' &&
	    kvdex_config_load_file(cfg, cfg->config_path, err, errlen) != 0) {
		return -EINVAL;
	}
	rc = apply_flags(cfg, argc, argv, err, errlen);
	if (rc != 0) {
		return rc;
	}
	if (cfg->auth_token_file[0] != '\0' && read_token_file(cfg, err, errlen) != 0) {
		return -EINVAL;
	}
	if (!cfg->tcp_enabled && !cfg->unix_enabled && cfg->rdma_mode != KVDEX_RDMA_ADDR) {
		errf(err, errlen, "listen-tcp and listen-unix are both none: nothing to serve");
		return -EINVAL;
	}
	return 0;
}

void
kvdex_config_usage(FILE *out)
{
	fprintf(out, "Usage: kvdexd [OPTIONS]\n"
		     "kvdex memory server: holds a KV-cache prefix index in a memory region that\n"
		     "clients read one-sidedly; applies published block events.\n\n"
		     "Every option except --config/--help/--version is also a config-file key\n"
		     "('key = value' lines, '#' comments); flags override the file.\n\n"
		     "  --config FILE\n"
		     "        read options from FILE first\n");
	for (size_t i = 0; i < NOPTS; i++) {
		fprintf(out, "  --%s %s\n        %s (default: %s)\n", opts[i].name, opts[i].arg,
			opts[i].help, opts[i].def);
	}
	fprintf(out, "  -h, --help\n        print this help and exit\n"
		     "  -V, --version\n        print the version and exit\n\n"
		     "Exit status: 0 after SIGTERM/SIGINT, 1 on a runtime failure, 2 on a usage\n"
		     "or configuration error.\n");
}
