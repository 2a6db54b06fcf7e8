/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Server addresses: "[name=]unix:/path" (shm), "[name=]host:port" (tcp, or
 * shm or verbs through auto) or "[name=]rdma:host:port" (verbs straight to
 * an rdma_cm listener), with "[v6addr]:port" for IPv6 literals. The name is the
 * server's placement identity (rendezvous seed); it defaults to the address
 * text so that clients given the same list agree without naming servers.
 *
 * "unix:" addresses never carry a name split: "unix:/a=b" is the path "/a=b".
 * A name is given as "name=unix:/path".
 */
#include "client/src/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int
copy_str(char *dst, size_t cap, const char *s, size_t len)
{
	if (len == 0 || len >= cap) {
		return -EINVAL;
	}
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

static int
parse_port(const char *s, size_t len, char *out, size_t cap)
{
	unsigned long v = 0;

	if (len == 0 || len > 5) {
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9') {
			return -EINVAL;
		}
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v == 0 || v > 65535) {
		return -EINVAL;
	}
	return copy_str(out, cap, s, len);
}

static int
parse_hostport(const char *addr, struct kvdex_endpoint *ep)
{
	const char *colon;
	size_t hlen;

	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');

		if (end == NULL || end[1] != ':') {
			return -EINVAL;
		}
		if (copy_str(ep->host, sizeof(ep->host), addr + 1, (size_t)(end - addr - 1)) < 0) {
			return -EINVAL;
		}
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL) {
			return -EINVAL;
		}
		hlen = (size_t)(colon - addr);
		/* An unbracketed IPv6 literal is ambiguous: refuse it. */
		if (memchr(addr, ':', hlen) != NULL) {
			return -EINVAL;
		}
		if (copy_str(ep->host, sizeof(ep->host), addr, hlen) < 0) {
			return -EINVAL;
		}
	}
	ep->kind = KVDEX_TRANSPORT_TCP;
	return parse_port(colon + 1, strlen(colon + 1), ep->port, sizeof(ep->port));
}

int
kvdex_endpoint_parse(const char *s, struct kvdex_endpoint *ep)
{
	const char *addr = s;
	const char *eq;

	if (s == NULL) {
		return -EINVAL;
	}
	memset(ep, 0, sizeof(*ep));
	eq = strncmp(s, "unix:", 5) == 0 ? NULL : strchr(s, '=');
	if (eq != NULL) {
		if (copy_str(ep->name, sizeof(ep->name), s, (size_t)(eq - s)) < 0) {
			return -EINVAL;
		}
		addr = eq + 1;
	} else if (copy_str(ep->name, sizeof(ep->name), s, strlen(s)) < 0) {
		return -EINVAL;
	}
	if (strncmp(addr, "unix:", 5) == 0) {
		ep->kind = KVDEX_TRANSPORT_SHM;
		return copy_str(ep->path, sizeof(ep->path), addr + 5, strlen(addr + 5));
	}
	if (strncmp(addr, "rdma:", 5) == 0) {
		int rc = parse_hostport(addr + 5, ep);

		ep->kind = KVDEX_TRANSPORT_VERBS;
		return rc;
	}
	return parse_hostport(addr, ep);
}

static int
trim(const char **s, size_t *len)
{
	while (*len > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t')) {
		(*len)--;
	}
	return *len > 0;
}

int
kvdex_endpoint_list_parse(const char *list, struct kvdex_endpoint **out, unsigned *n, char *err,
			  size_t errlen)
{
	struct kvdex_endpoint *eps = NULL;
	unsigned cnt = 0;
	const char *p = list;

	while (p != NULL && *p != '\0') {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		const char *item = p;
		char buf[512];
		struct kvdex_endpoint *tmp;

		p = comma != NULL ? comma + 1 : NULL;
		if (!trim(&item, &len)) {
			continue;
		}
		if (len >= sizeof(buf) || cnt >= KVDEX_MAX_SERVERS) {
			snprintf(err, errlen, "server list: too many servers or address too long");
			goto err_free;
		}
		memcpy(buf, item, len);
		buf[len] = '\0';
		tmp = realloc(eps, (cnt + 1) * sizeof(*eps));
		if (tmp == NULL) {
			free(eps);
			return -ENOMEM;
		}
		eps = tmp;
		if (kvdex_endpoint_parse(buf, &eps[cnt]) < 0) {
			snprintf(err, errlen, "bad server address '%s'", buf);
			goto err_free;
		}
		cnt++;
	}
	if (cnt == 0) {
		snprintf(err, errlen, "no servers given");
		goto err_free;
	}
	*out = eps;
	*n = cnt;
	return 0;

err_free:
	free(eps);
	return -EINVAL;
}

static bool
sockaddr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return false;
}

static bool
sockaddr_same_host(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family) {
		return false;
	}
	if (a->sa_family == AF_INET) {
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6) {
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			      &((const struct sockaddr_in6 *)b)->sin6_addr,
			      sizeof(struct in6_addr)) == 0;
	}
	return false;
}

static bool
sockaddr_is_ifaddr(const struct sockaddr *sa, const struct ifaddrs *ifs)
{
	for (const struct ifaddrs *i = ifs; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr != NULL && sockaddr_same_host(sa, i->ifa_addr)) {
			return true;
		}
	}
	return false;
}

int
kvdex_host_is_local(const char *host)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	struct ifaddrs *ifs = NULL;
	int local = 0;

	if (host == NULL || host[0] == '\0') {
		return 0;
	}
	if (getaddrinfo(host, NULL, &hints, &res) != 0) {
		return 0;
	}
	if (getifaddrs(&ifs) < 0) {
		ifs = NULL;
	}
	for (const struct addrinfo *ai = res; ai != NULL && !local; ai = ai->ai_next) {
		if (sockaddr_is_loopback(ai->ai_addr) ||
		    (ifs != NULL && sockaddr_is_ifaddr(ai->ai_addr, ifs))) {
			local = 1;
		}
	}
	if (ifs != NULL) {
		freeifaddrs(ifs);
	}
	freeaddrinfo(res);
	return local;
}
