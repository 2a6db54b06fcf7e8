/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Recursive-descent JSON reader for the hash test vectors. Depth is bounded, errors
 * free everything built so far, and the result is a tree of heap nodes.
 */
#include "json_mini.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JM_MAX_DEPTH 32

struct jm_parser {
	const char *p;
	const char *end;
	int depth;
};

static struct jm_val *jm_value(struct jm_parser *ps);

static void
jm_skip_ws(struct jm_parser *ps)
{
	while (ps->p < ps->end &&
	       (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) {
		ps->p++;
	}
}

static bool
jm_eat(struct jm_parser *ps, char c)
{
	jm_skip_ws(ps);
	if (ps->p < ps->end && *ps->p == c) {
		ps->p++;
		return true;
	}
	return false;
}

static bool
jm_literal(struct jm_parser *ps, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
		return false;
	}
	ps->p += n;
	return true;
}

static int
jm_hex4(const char *p)
{
	int v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9') {
			v |= c - '0';
		} else if (c >= 'a' && c <= 'f') {
			v |= c - 'a' + 10;
		} else if (c >= 'A' && c <= 'F') {
			v |= c - 'A' + 10;
		} else {
			return -1;
		}
	}
	return v;
}

/* One escape after the backslash; only ASCII results are supported. */
static int
jm_escape(struct jm_parser *ps)
{
	static const char from[] = "\"\\/bfnrt";
	static const char to[] = "\"\\/\b\f\n\r\t";
	const char *hit;
	int v;

	if (ps->p >= ps->end) {
		return -1;
	}
	if (*ps->p == 'u') {
		if (ps->end - ps->p < 5) {
			return -1;
		}
		v = jm_hex4(ps->p + 1);
		ps->p += 5;
		return v >= 0 && v < 0x80 ? v : -1;
	}
	hit = strchr(from, *ps->p);
	if (!hit || !*ps->p) {
		return -1;
	}
	ps->p++;
	return to[hit - from];
}

static char *
jm_string(struct jm_parser *ps, size_t *len)
{
	char *out;
	size_t n = 0;
	int c;

	if (!jm_eat(ps, '"')) {
		return NULL;
	}
	/* The decoded string is never longer than the raw one. */
	out = malloc((size_t)(ps->end - ps->p) + 1);
	if (!out) {
		return NULL;
	}
	while (ps->p < ps->end && *ps->p != '"') {
		c = (unsigned char)*ps->p++;
		if (c == '\\') {
			c = jm_escape(ps);
			if (c < 0) {
				goto err;
			}
		}
		out[n++] = (char)c;
	}
	if (ps->p >= ps->end) {
		goto err;
	}
	ps->p++;
	out[n] = '\0';
	*len = n;
	return out;
err:
	free(out);
	return NULL;
}

static struct jm_val *
jm_new(enum jm_type type)
{
	struct jm_val *v = calloc(1, sizeof(*v));

	if (v) {
		v->type = type;
	}
	return v;
}

static int
jm_push(struct jm_val *c, char *key, struct jm_val *item)
{
	struct jm_val **items;
	char **keys;

	items = realloc(c->items, (c->n + 1) * sizeof(*items));
	if (!items) {
		return -1;
	}
	c->items = items;
	if (c->type == JM_OBJ) {
		keys = realloc(c->keys, (c->n + 1) * sizeof(*keys));
		if (!keys) {
			return -1;
		}
		c->keys = keys;
		c->keys[c->n] = key;
	}
	c->items[c->n++] = item;
	return 0;
}

/* Members of an array or object, after the opening bracket. */
static struct jm_val *
jm_container(struct jm_parser *ps, enum jm_type type, char close)
{
	struct jm_val *c = jm_new(type), *item;
	char *key = NULL;
	size_t key_len;

	if (!c || ++ps->depth > JM_MAX_DEPTH) {
		goto err;
	}
	if (jm_eat(ps, close)) {
		ps->depth--;
		return c;
	}
	do {
		if (type == JM_OBJ) {
			key = jm_string(ps, &key_len);
			if (!key || !jm_eat(ps, ':')) {
				goto err;
			}
		}
		item = jm_value(ps);
		if (!item || jm_push(c, key, item)) {
			jm_free(item);
			goto err;
		}
		key = NULL;
	} while (jm_eat(ps, ','));
	if (!jm_eat(ps, close)) {
		goto err;
	}
	ps->depth--;
	return c;
err:
	free(key);
	jm_free(c);
	return NULL;
}

static struct jm_val *
jm_number(struct jm_parser *ps)
{
	const char *start = ps->p;
	struct jm_val *v;

	while (ps->p < ps->end && strchr("+-0123456789.eE", *ps->p) && *ps->p) {
		ps->p++;
	}
	if (ps->p == start) {
		return NULL;
	}
	v = jm_new(JM_NUM);
	if (!v) {
		return NULL;
	}
	v->len = (size_t)(ps->p - start);
	v->str = strndup(start, v->len);
	if (!v->str) {
		jm_free(v);
		return NULL;
	}
	return v;
}

static struct jm_val *
jm_value(struct jm_parser *ps)
{
	struct jm_val *v;

	jm_skip_ws(ps);
	if (ps->p >= ps->end) {
		return NULL;
	}
	switch (*ps->p) {
	case '{':
		ps->p++;
		return jm_container(ps, JM_OBJ, '}');
	case '[':
		ps->p++;
		return jm_container(ps, JM_ARR, ']');
	case '"':
		v = jm_new(JM_STR);
		if (v) {
			v->str = jm_string(ps, &v->len);
			if (!v->str) {
				jm_free(v);
				v = NULL;
			}
		}
		return v;
	case 'n':
		return jm_literal(ps, "null") ? jm_new(JM_NULL) : NULL;
	case 't':
	case 'f':
		v = NULL;
		if (jm_literal(ps, "true") || jm_literal(ps, "false")) {
			v = jm_new(JM_BOOL);
			if (v) {
				v->b = ps->p[-1] == 'e' && ps->p[-2] == 'u';
			}
		}
		return v;
	default:
		return jm_number(ps);
	}
}

struct jm_val *
jm_parse(const char *text, size_t len)
{
	struct jm_parser ps = {.p = text, .end = text + len};
	struct jm_val *v = jm_value(&ps);

	jm_skip_ws(&ps);
	if (v && ps.p != ps.end) {
		jm_free(v);
		return NULL;
	}
	return v;
}

struct jm_val *
jm_parse_file(const char *path)
{
	struct jm_val *v = NULL;
	char *text = NULL;
	long size;
	FILE *f;

	f = fopen(path, "rb");
	if (!f) {
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		goto out;
	}
	text = malloc((size_t)size + 1);
	if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
		goto out;
	}
	v = jm_parse(text, (size_t)size);
out:
	free(text);
	fclose(f);
	return v;
}

void
jm_free(struct jm_val *v)
{
	if (!v) {
		return;
	}
	for (size_t i = 0; i < v->n; i++) {
		jm_free(v->items[i]);
		if (v->keys) {
			free(v->keys[i]);
		}
	}
	free(v->items);
	free(v->keys);
	free(v->str);
	free(v);
}

const struct jm_val *
jm_get(const struct jm_val *obj, const char *key)
{
	if (!obj || obj->type != JM_OBJ) {
		return NULL;
	}
	for (size_t i = 0; i < obj->n; i++) {
		if (strcmp(obj->keys[i], key) == 0) {
			return obj->items[i];
		}
	}
	return NULL;
}

const struct jm_val *
jm_at(const struct jm_val *arr, size_t i)
{
	if (!arr || arr->type != JM_ARR || i >= arr->n) {
		return NULL;
	}
	return arr->items[i];
}

bool
jm_is_null(const struct jm_val *v)
{
	return !v || v->type == JM_NULL;
}

int64_t
jm_i64(const struct jm_val *v)
{
	if (!v || (v->type != JM_NUM && v->type != JM_STR)) {
		return 0;
	}
	return strtoll(v->str, NULL, 10);
}

uint64_t
jm_u64(const struct jm_val *v)
{
	if (!v || (v->type != JM_NUM && v->type != JM_STR)) {
		return 0;
	}
	return strtoull(v->str, NULL, 10);
}

const char *
jm_str(const struct jm_val *v)
{
	return v && v->type == JM_STR ? v->str : "";
}
