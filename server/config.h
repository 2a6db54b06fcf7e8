/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdexd configuration: command-line flags and a `key = value` config file
 * with the same keys (option names without "--"). Flags override the file.
 * Every option, its default and its meaning are listed in one table
 * (config.c) that drives parsing, validation and --help.
 */
#ifndef KVDEX_SERVER_CONFIG_H
#define KVDEX_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVDEX_CFG_STR 256u
#define KVDEX_CFG_PATH 4096u
#define KVDEX_TOKEN_MAX 1024u
#define KVDEX_UNIX_PATH_MAX 108u

/* listen-rdma modes */
enum kvdex_rdma_mode {
	KVDEX_RDMA_AUTO = 0, /* a device exists: tcp host, tcp port + 1; bind failure = warning */
	KVDEX_RDMA_NONE,     /* no RDMA listener */
	KVDEX_RDMA_ADDR,     /* rdma_host:rdma_port; any failure is fatal */
};

struct kvdex_config {
	/* listen-tcp, parsed: tcp_enabled false for "none" */
	bool tcp_enabled;
	char tcp_host[KVDEX_CFG_STR];
	uint16_t tcp_port;
	/* listen-rdma (enum kvdex_rdma_mode); host and port for KVDEX_RDMA_ADDR */
	int rdma_mode;
	char rdma_host[KVDEX_CFG_STR];
	uint16_t rdma_port;
	/* listen-unix: unix_path "" = default (derived from the tcp port) */
	bool unix_enabled;
	char unix_path[KVDEX_UNIX_PATH_MAX];
	char server_id[KVDEX_CFG_STR]; /* "" = <hostname>:<port> */
	uint64_t cluster_epoch;
	char auth_token[KVDEX_TOKEN_MAX]; /* "" = no auth */
	char auth_token_file[KVDEX_CFG_PATH];
	uint64_t capacity_blocks;
	uint64_t bucket_size;
	uint64_t max_region_mb;
	uint64_t max_workers;
	uint64_t max_namespaces;
	uint64_t max_batch_events;
	uint64_t max_msg_bytes;
	uint64_t max_conns;
	uint64_t spec_ttl_ms;
	uint64_t sweep_buckets_per_tick;
	int log_level;
	char ready_file[KVDEX_CFG_PATH];
	char config_path[KVDEX_CFG_PATH];
};

/* Fill in every default. */
void kvdex_config_defaults(struct kvdex_config *cfg);

/*
 * Set one option by name (without "--"). `where` prefixes error messages
 * ("file:line" or "--flag").
 * @return 0 or -EINVAL with err filled.
 */
int kvdex_config_set(struct kvdex_config *cfg, const char *key, const char *val, const char *where,
		     char *err, size_t errlen);

/* Parse a config file. @return 0, -EINVAL (err names file:line), -errno. */
int kvdex_config_load_file(struct kvdex_config *cfg, const char *path, char *err, size_t errlen);

/*
 * Parse argv: defaults, then --config FILE, then the flags, then checks
 * that need every option (auth token file read).
 * @return 0 (run), 1 (--help/--version printed to `out`: exit 0),
 *         -EINVAL (err filled: exit 2).
 */
int kvdex_config_parse_args(struct kvdex_config *cfg, int argc, char **argv, FILE *out, char *err,
			    size_t errlen);

/* Print --help. */
void kvdex_config_usage(FILE *out);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_SERVER_CONFIG_H */
