/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal JSON reader for the test vectors (tests/data/vllm_hash_vectors.json), not a
 * general parser: UTF-8 input, string escapes limited to ASCII (the generator writes
 * every text or binary string as hex), numbers kept as text. Tests only.
 */
#ifndef KVDEX_TESTS_HASH_JSON_MINI_H
#define KVDEX_TESTS_HASH_JSON_MINI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum jm_type {
	JM_NULL,
	JM_BOOL,
	JM_NUM,
	JM_STR,
	JM_ARR,
	JM_OBJ,
};

struct jm_val {
	enum jm_type type;
	bool b;
	char *str;   /* JM_STR: the decoded string; JM_NUM: the number's text */
	size_t len;  /* of str */
	size_t n;    /* JM_ARR / JM_OBJ: number of members */
	char **keys; /* JM_OBJ */
	struct jm_val **items;
};

/* Parse @text; NULL on a syntax error or ENOMEM. Free with jm_free(). */
struct jm_val *jm_parse(const char *text, size_t len);
/* Parse the file at @path; NULL if unreadable or invalid. */
struct jm_val *jm_parse_file(const char *path);
void jm_free(struct jm_val *v);

/* Member @key of an object, or NULL (also when @obj is not an object). */
const struct jm_val *jm_get(const struct jm_val *obj, const char *key);
/* Element @i of an array, or NULL. */
const struct jm_val *jm_at(const struct jm_val *arr, size_t i);
bool jm_is_null(const struct jm_val *v);
/* A JM_NUM integer, or a JM_STR holding a decimal integer (for 64-bit values). */
int64_t jm_i64(const struct jm_val *v);
uint64_t jm_u64(const struct jm_val *v);
/* The string of a JM_STR, "" otherwise. */
const char *jm_str(const struct jm_val *v);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_TESTS_HASH_JSON_MINI_H */
