/* SPDX-License-Identifier: Apache-2.0 */
/* Hex helpers shared by the hash tests. Tests only. */
#ifndef KVDEX_TESTS_HASH_HEX_H
#define KVDEX_TESTS_HASH_HEX_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline int
hex_nibble(char c)
{
	if (c >= '0' && c <= '9') {
		return c - '0';
	}
	if (c >= 'a' && c <= 'f') {
		return c - 'a' + 10;
	}
	if (c >= 'A' && c <= 'F') {
		return c - 'A' + 10;
	}
	return -1;
}

/* Decode @hex into @out (room for strlen(hex) / 2 bytes); bytes written or -1. */
static inline long
hex_decode(const char *hex, uint8_t *out)
{
	size_t n = strlen(hex);
	int hi, lo;

	if (n % 2) {
		return -1;
	}
	for (size_t i = 0; i < n / 2; i++) {
		hi = hex_nibble(hex[2 * i]);
		lo = hex_nibble(hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			return -1;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (long)(n / 2);
}

/* Lowercase hex of @n bytes into @out (room for 2 * n + 1). Returns @out. */
static inline char *
hex_encode(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
	return out;
}

#endif /* KVDEX_TESTS_HASH_HEX_H */
