/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vLLM-exact prefix-cache block hashes (vLLM v1 `hash_block_tokens` and friends).
 *
 * vLLM names a full KV block by a chained digest
 *
 *   h_0 = hash_fn((NONE_HASH, tuple(tokens[0:B]), extra_keys(0)))
 *   h_i = hash_fn((h_{i-1},   tuple(tokens[i*B:(i+1)*B]), extra_keys(i)))
 *
 * where hash_fn is one of four functions selected by --prefix-caching-hash-algo,
 * each a digest of a serialization of that Python 3-tuple:
 *
 *   sha256        SHA-256     of pickle.dumps(v, protocol=5)        32-byte digest
 *   sha256_cbor   SHA-256     of cbor2.dumps(v, canonical=True)     32-byte digest
 *   xxhash        XXH3-128    of pickle.dumps(v, protocol=5)        16-byte digest
 *   xxhash_cbor   XXH3-128    of cbor2.dumps(v, canonical=True)     16-byte digest
 *
 * NONE_HASH is hash_fn(PYTHONHASHSEED) with the seed hashed as a Python str. Parents
 * chain on the full digest. KV events carry the low 64 bits of a digest: its last 8
 * bytes read big-endian (kvdex_vllm_hash_u64()).
 *
 * extra_keys(i) is None or the tuple lora_keys + mm_keys + salt_keys + prompt_embeds_keys:
 * the LoRA adapter name (every block of a LoRA request), one (identifier, offset of the
 * item relative to the block start) pair per multimodal item overlapping the block, the
 * cache salt (block 0 only, when non-empty), and the SHA-256 of the block's prompt
 * embeddings.
 *
 * Source of truth: vLLM's vllm/v1/core/kv_cache_utils.py and vllm/utils/hashing.py.
 * tests/hash/gen_vectors.py rebuilds the same values with Python's own pickle, cbor2,
 * hashlib and xxhash (and checks third-party vectors made with vLLM), and the 'hash'
 * test suite checks this code against them byte for byte.
 *
 * Nothing here allocates: values are serialized into a stack buffer and hashed in one
 * shot, or, for values larger than that buffer, serialized twice and streamed.
 */
#ifndef KVDEX_COMMON_VLLM_HASH_H
#define KVDEX_COMMON_VLLM_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* vLLM's PrefixCachingHashAlgo, in the order of its Literal. */
enum kvdex_vllm_hash_algo {
	KVDEX_VLLM_SHA256 = 0,
	KVDEX_VLLM_SHA256_CBOR = 1,
	KVDEX_VLLM_XXHASH = 2,
	KVDEX_VLLM_XXHASH_CBOR = 3,
};

#define KVDEX_VLLM_SHA256_LEN 32u
#define KVDEX_VLLM_XXH3_128_LEN 16u
/* Largest block digest (and so the size of one slot of chain output). */
#define KVDEX_VLLM_DIGEST_MAX 32u
/*
 * Largest root. A seed-derived root is a digest, but vLLM draws 32 random bytes when
 * PYTHONHASHSEED is unset, whatever the algorithm, and such a root learned out of band
 * may be installed with kvdex_vllm_hasher_init_root().
 */
#define KVDEX_VLLM_ROOT_MAX 64u
/* Prompt-embeddings keys are SHA-256 digests of the block's embedding tensor bytes. */
#define KVDEX_VLLM_EMBEDS_DIGEST_LEN 32u

/*
 * The algorithm and root of one vLLM deployment. A plain value: fill it with
 * kvdex_vllm_hasher_init() or kvdex_vllm_hasher_init_root(), copy it freely, share it
 * read-only between threads. Fields are read-only for users.
 */
struct kvdex_vllm_hasher {
	enum kvdex_vllm_hash_algo algo;
	uint32_t digest_len;
	uint32_t root_len;
	uint8_t root[KVDEX_VLLM_ROOT_MAX];
};

/*
 * One multimodal extra key of one block, the Python tuple (identifier, offset).
 * @identifier is the item's mm_feature.identifier (UTF-8, not NUL-terminated) and
 * @offset the item's first placeholder token minus the block's first token: negative
 * when the item started in an earlier block.
 */
struct kvdex_vllm_mm_key {
	const char *identifier;
	size_t identifier_len;
	int64_t offset;
};

/*
 * The extra keys of one block, hashed in this order, each only when present:
 * @lora_name when non-NULL (an empty name is still a key, as in vLLM), each of
 * @mm[0..n_mm), @cache_salt when non-NULL and non-empty, @embeds_digest (32 bytes)
 * when non-NULL. Strings are UTF-8 exactly as Python would encode them. With no key
 * present the block's extra keys are None. The caller applies vLLM's placement rules:
 * the salt goes on block 0 only; kvdex_vllm_hash_chain() does this for whole requests.
 */
struct kvdex_vllm_block_keys {
	const char *lora_name;
	size_t lora_name_len;
	const struct kvdex_vllm_mm_key *mm;
	size_t n_mm;
	const char *cache_salt;
	size_t cache_salt_len;
	const uint8_t *embeds_digest;
};

/*
 * A multimodal item of a request: its identifier (mm_feature.identifier) and its
 * placeholder range [offset, offset + length) in the request's token ids.
 */
struct kvdex_vllm_mm_item {
	const char *identifier;
	size_t identifier_len;
	uint64_t offset;
	uint64_t length;
};

/*
 * A request, as vLLM's request block hasher sees it.
 * @tokens: all token ids (prompt, then generated).
 * @lora_name: adapter name of a LoRA request, or NULL.
 * @cache_salt: the request's cache_salt, or NULL (empty counts as none).
 * @mm: multimodal items sorted by offset (vLLM's assumption), @n_mm of them.
 * @embeds_digests: NULL, or one KVDEX_VLLM_EMBEDS_DIGEST_LEN-byte digest per full hash
 *	block (sha256 of that block's prompt-embedding bytes, computed by the caller).
 */
struct kvdex_vllm_request {
	const uint32_t *tokens;
	size_t n_tokens;
	const char *lora_name;
	size_t lora_name_len;
	const char *cache_salt;
	size_t cache_salt_len;
	const struct kvdex_vllm_mm_item *mm;
	size_t n_mm;
	const uint8_t *embeds_digests;
};

/**
 * kvdex_vllm_hash_algo_parse() - Map a --prefix-caching-hash-algo name to its enum.
 * @name: "sha256", "sha256_cbor", "xxhash" or "xxhash_cbor" (NUL-terminated).
 * @out: receives the algorithm.
 *
 * Return: 0, or -EINVAL if @name is NULL or not one of the four names.
 * Context: any thread; does not block.
 * Ownership: @name is borrowed for the call.
 */
int kvdex_vllm_hash_algo_parse(const char *name, enum kvdex_vllm_hash_algo *out);

/**
 * kvdex_vllm_hash_algo_name() - vLLM's name of an algorithm.
 * @algo: the algorithm.
 *
 * Return: a static string, or NULL if @algo is out of range.
 * Context: any thread; does not block.
 * Ownership: the string is static; never free it.
 */
const char *kvdex_vllm_hash_algo_name(enum kvdex_vllm_hash_algo algo);

/**
 * kvdex_vllm_hash_digest_len() - Size of the block digests of an algorithm.
 * @algo: the algorithm.
 *
 * Return: 32 (sha256*), 16 (xxhash*), or 0 if @algo is out of range.
 * Context: any thread; does not block.
 * Ownership: none.
 */
size_t kvdex_vllm_hash_digest_len(enum kvdex_vllm_hash_algo algo);

/**
 * kvdex_vllm_hasher_init() - Set up a hasher whose root is derived from a seed, as
 * vLLM's init_none_hash() does when PYTHONHASHSEED is set: root = hash_fn(seed as str).
 * @h: the hasher to fill.
 * @algo: the algorithm.
 * @seed: the PYTHONHASHSEED string, UTF-8, not NUL-terminated ("0" and "00" differ).
 * @seed_len: its length in bytes.
 *
 * Return: 0; -EINVAL if @algo is out of range or @seed is NULL with @seed_len > 0;
 *	-E2BIG if the seed is too large to serialize (more than 16 MiB).
 * Context: any thread; does not block.
 * Ownership: @seed is borrowed for the call; @h holds no pointers and needs no fini.
 */
int kvdex_vllm_hasher_init(struct kvdex_vllm_hasher *h, enum kvdex_vllm_hash_algo algo,
			   const char *seed, size_t seed_len);

/**
 * kvdex_vllm_hasher_init_root() - Set up a hasher with explicit root bytes (NONE_HASH),
 * e.g. the 32 random bytes of an engine started without PYTHONHASHSEED.
 * @h: the hasher to fill.
 * @algo: the algorithm.
 * @root: the root bytes.
 * @root_len: 1 to KVDEX_VLLM_ROOT_MAX.
 *
 * Return: 0, or -EINVAL if @algo is out of range, @root is NULL or @root_len is 0 or
 *	larger than KVDEX_VLLM_ROOT_MAX.
 * Context: any thread; does not block.
 * Ownership: @root is copied.
 */
int kvdex_vllm_hasher_init_root(struct kvdex_vllm_hasher *h, enum kvdex_vllm_hash_algo algo,
				const uint8_t *root, size_t root_len);

/**
 * kvdex_vllm_hash_block() - Hash one block: hash_fn((parent, tuple(tokens), extra_keys)).
 * @h: an initialized hasher.
 * @parent: the full digest of the previous block, or NULL for the first block.
 * @parent_len: its length; 0 (or @parent NULL) selects the root, as vLLM's
 *	`if not parent_block_hash` does.
 * @tokens: the block's token ids.
 * @n_tokens: how many (vLLM hashes only full blocks; any count is accepted).
 * @keys: the block's extra keys, or NULL for None.
 * @out: receives h->digest_len bytes.
 *
 * Return: 0; -EINVAL if @parent is NULL with @parent_len > 0, @tokens is NULL with
 *	@n_tokens > 0, or a key has a NULL string with a non-zero length; -E2BIG if the
 *	value serializes to more than about 16 MiB.
 * Context: any thread; does not block; uses about 7 KiB of stack.
 * Ownership: every argument is borrowed for the call.
 */
int kvdex_vllm_hash_block(const struct kvdex_vllm_hasher *h, const uint8_t *parent,
			  size_t parent_len, const uint32_t *tokens, size_t n_tokens,
			  const struct kvdex_vllm_block_keys *keys, uint8_t *out);

/**
 * kvdex_vllm_hash_chain() - Hash the full blocks of a request, as vLLM's request block
 * hasher does, and name each physical block.
 * @h: an initialized hasher.
 * @req: the request (tokens and extra-key sources).
 * @hash_block_size: tokens per hashed block (vLLM's hash_block_size, normally equal
 *	to --block-size).
 * @block_size: tokens per physical block of the cache group, a multiple k of
 *	@hash_block_size.
 * @out: NULL, or room for @max_blocks digests of h->digest_len bytes each, packed.
 * @out_u64: NULL, or room for @max_blocks 64-bit event values.
 * @max_blocks: stop after this many physical blocks (hash lazily, e.g. for a lookup
 *	that stops at the first miss).
 *
 * Hashing runs over hash blocks of @hash_block_size tokens from the root; physical
 * block j is named by the digest of hash block (j+1)*k - 1 (vLLM's
 * BlockHashListWithBlockSize), and its event value is that digest's u64. (An older vLLM
 * variant named block j by the concatenation of hash blocks j*k .. (j+1)*k - 1; its u64
 * is the same. Call with @block_size == @hash_block_size to get those digests.)
 * Multimodal keys follow vLLM's scan over @req->mm for the whole request from its
 * first token. Partial trailing blocks are not hashed.
 *
 * Return: the number of physical blocks named (at most @max_blocks); -EINVAL if
 *	@hash_block_size is 0, @block_size is not a positive multiple of it, @req->tokens
 *	is NULL with tokens, or a string is NULL with a non-zero length; -E2BIG as for
 *	kvdex_vllm_hash_block().
 * Context: any thread; does not block; uses about 7 KiB of stack.
 * Ownership: every argument is borrowed for the call.
 */
ssize_t kvdex_vllm_hash_chain(const struct kvdex_vllm_hasher *h,
			      const struct kvdex_vllm_request *req, size_t hash_block_size,
			      size_t block_size, uint8_t *out, uint64_t *out_u64,
			      size_t max_blocks);

/**
 * kvdex_vllm_hash_u64() - The 64-bit value KV events carry for a digest
 * (maybe_convert_block_hash with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1):
 * int.from_bytes(digest, "big") & (2**64 - 1), i.e. its last 8 bytes read big-endian
 * (for XXH3-128, the low 64 bits of the hash).
 * @digest: the digest (or a concatenation of digests).
 * @len: its length; fewer than 8 bytes are read as a shorter big-endian number.
 *
 * Return: the value.
 * Context: any thread; does not block.
 * Ownership: @digest is borrowed for the call.
 */
uint64_t kvdex_vllm_hash_u64(const uint8_t *digest, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_COMMON_VLLM_HASH_H */
