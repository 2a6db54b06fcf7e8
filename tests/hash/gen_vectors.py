#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Generate tests/data/vllm_hash_vectors.json: vLLM prefix-cache block hash vectors.

Independent of the C code: values are built the way vLLM v1 builds them
(vllm/v1/core/kv_cache_utils.py: init_none_hash, hash_block_tokens,
generate_block_hash_extra_keys, _gen_mm_extra_hash_keys, get_request_block_hasher,
BlockHashListWithBlockSize, maybe_convert_block_hash) and hashed with the functions
of vllm/utils/hashing.py, using Python's own pickle and hashlib and Debian's
python3-cbor2 and python3-xxhash:

    apt-get install -y python3-cbor2 python3-xxhash
    /usr/bin/python3 tests/hash/gen_vectors.py [-o tests/data/vllm_hash_vectors.json]

The output is deterministic. Published third-party vectors (Mooncake conductor's
fixtures, generated with vLLM itself) are asserted before anything is written.

JSON conventions (read by tests/hash/vectors_test.c, a minimal reader): every text or
binary string is lowercase hex ("*_hex"); a string spec is null or {"hex": h, "rep": n}
(h repeated n times); token lists are {"ids": [...], "rep": n}; 64-bit values are
decimal strings.
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import pickle
import random
import sys

import cbor2
import xxhash

# ---- vllm/utils/hashing.py ----


def sha256(obj):
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def sha256_cbor(obj):
    return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()


def xxhash_pickle(obj):
    return xxhash.xxh3_128_digest(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def xxhash_cbor(obj):
    return xxhash.xxh3_128_digest(cbor2.dumps(obj, canonical=True))


HASH_FNS = {
    "sha256": sha256,
    "sha256_cbor": sha256_cbor,
    "xxhash": xxhash_pickle,
    "xxhash_cbor": xxhash_cbor,
}


def serialize(algo, obj):
    if algo in ("sha256", "xxhash"):
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cbor2.dumps(obj, canonical=True)


# ---- vllm/v1/core/kv_cache_utils.py ----


def init_none_hash(hash_fn, seed):
    # PYTHONHASHSEED set: the seed is hashed as a str.
    return hash_fn(seed)


def maybe_convert_block_hash(hash_bytes):
    return int.from_bytes(hash_bytes, byteorder="big") & ((1 << 64) - 1)


class MMItem:
    def __init__(self, identifier, offset, length):
        self.identifier = identifier
        self.offset = offset
        self.length = length


class Request:
    def __init__(self, tokens, lora_name=None, cache_salt=None, mm=(), embeds=None):
        self.all_token_ids = list(tokens)
        self.num_tokens = len(tokens)
        self.lora_name = lora_name  # None: not a LoRA request
        self.cache_salt = cache_salt
        self.mm_features = list(mm)
        self.embeds_digests = embeds  # per hash block, stands in for the tensor hash


def gen_mm_extra_hash_keys(request, start_token_idx, end_token_idx, start_mm_idx):
    extra_keys = []
    mm_features = request.mm_features
    if not mm_features:
        return extra_keys, start_mm_idx
    last = mm_features[-1]
    if last.offset + last.length <= start_token_idx:
        return extra_keys, start_mm_idx
    if start_mm_idx < 0:
        start_mm_idx = len(mm_features) + start_mm_idx
    curr_mm_idx = start_mm_idx
    while mm_features and curr_mm_idx < len(mm_features):
        f = mm_features[curr_mm_idx]
        offset, length = f.offset, f.length
        if end_token_idx > offset:
            if start_token_idx >= offset + length:
                curr_mm_idx += 1
                continue
            extra_keys.append((f.identifier, offset - start_token_idx))
            if end_token_idx >= offset + length:
                curr_mm_idx += 1
            else:
                break
        else:
            break
    return extra_keys, curr_mm_idx


def generate_block_hash_extra_keys(request, start_token_idx, end_token_idx, start_mm_idx,
                                   block_index):
    mm_keys, new_idx = gen_mm_extra_hash_keys(request, start_token_idx, end_token_idx,
                                              start_mm_idx)
    lora_keys = [] if request.lora_name is None else [request.lora_name]
    salt_keys = [request.cache_salt] if (start_token_idx == 0 and request.cache_salt) else []
    embeds_keys = [] if request.embeds_digests is None else [request.embeds_digests[block_index]]
    extra = lora_keys + mm_keys + salt_keys + embeds_keys
    if not extra:
        return None, new_idx
    return tuple(extra), new_idx


def hash_block_tokens(hash_fn, none_hash, parent_block_hash, tokens, extra_keys=None):
    if not parent_block_hash:
        parent_block_hash = none_hash
    return hash_fn((parent_block_hash, tuple(tokens), extra_keys))


def request_block_hashes(hash_fn, none_hash, block_size, request):
    """get_request_block_hasher for a request hashed from its first token."""
    hashes = []
    start = 0
    curr_mm_idx = 0
    prev = None
    while start + block_size <= request.num_tokens:
        end = start + block_size
        extra, curr_mm_idx = generate_block_hash_extra_keys(request, start, end, curr_mm_idx,
                                                            len(hashes))
        h = hash_block_tokens(hash_fn, none_hash, prev, request.all_token_ids[start:end], extra)
        hashes.append(h)
        prev = h
        start += block_size
    return hashes


def physical_block_hashes(hashes, hash_block_size, block_size):
    """BlockHashListWithBlockSize (current form): the last fine hash of each block."""
    k = block_size // hash_block_size
    return [hashes[(j + 1) * k - 1] for j in range(len(hashes) // k)]


# ---- JSON helpers ----


def sspec(s, rep=1):
    """String spec for a str (UTF-8) or bytes value."""
    if s is None:
        return None
    b = s.encode("utf-8") if isinstance(s, str) else s
    return {"hex": b.hex(), "rep": rep}


def tspec(ids, rep=1):
    return {"ids": list(ids), "rep": rep}


def expand_tokens(spec):
    return spec["ids"] * spec["rep"]


SMALL = 4096  # vectors whose serialization is at most this long record it in full


def encoding_fields(algo, value):
    enc = serialize(algo, value)
    out = {"encoded_len": len(enc), "encoded_sha256": hashlib.sha256(enc).hexdigest()}
    if len(enc) <= SMALL:
        out["encoded_hex"] = enc.hex()
    return out


# ---- vector families ----

ALGOS = ["sha256", "sha256_cbor", "xxhash", "xxhash_cbor"]
SEEDS = ["0", "00", "42", "random", "4294967295", "", "\u79cd\u5b50-\U0001f680"]

EDGE_TOKENS = [0, 1, 23, 24, 255, 256, 65535, 65536, 65537, 16777215, 16777216,
               2147483647, 2147483648, 4294967295, 151643, 128000]


def gen_roots():
    out = []
    for algo in ALGOS:
        for seed in SEEDS + ["s" * 65535, "s" * 65536]:
            digest = init_none_hash(HASH_FNS[algo], seed)
            if len(seed) > 256:
                spec = sspec(seed[0], len(seed))
            else:
                spec = sspec(seed)
            v = {"algo": algo, "seed": spec, "digest_hex": digest.hex()}
            v.update(encoding_fields(algo, seed))
            out.append(v)
    return out


def block_cases(rng):
    """(name, tokens spec, keys) for hash_block; keys mirror struct kvdex_vllm_block_keys."""
    k0 = {"lora": None, "mm": [], "salt": None, "embeds": None}
    cases = [
        ("plain16", tspec(range(1, 17)), k0),
        ("edge_tokens", tspec(EDGE_TOKENS), k0),
        ("one_token", tspec([7]), k0),
        ("two_tokens", tspec([7, 8]), k0),
        ("three_tokens", tspec([7, 8, 9]), k0),
        ("four_tokens", tspec([7, 8, 9, 10]), k0),
        ("empty_block", tspec([]), k0),
        ("cbor_array_23", tspec(range(23)), k0),
        ("cbor_array_24", tspec(range(24)), k0),
        ("cbor_array_256", tspec(range(256)), k0),
        ("random_vocab", tspec([rng.randrange(0, 152064) for _ in range(16)]), k0),
        ("lora", tspec(range(16)), dict(k0, lora="adapter-A")),
        ("lora_empty_name", tspec(range(16)), dict(k0, lora="")),
        ("salt", tspec(range(16)), dict(k0, salt="tenant-salt")),
        ("empty_salt_is_none", tspec(range(16)), dict(k0, salt="")),
        ("lora_salt", tspec(range(16)), dict(k0, lora="adapter-A", salt="tenant-salt")),
        ("utf8", tspec(range(4)), dict(k0, lora="\u6a21\u578b-\u9002\u914d\u5668",
                                       salt="\u76d0\u503c-\U0001f680")),
        ("text_23", tspec(range(4)), dict(k0, lora="a" * 23)),
        ("text_24", tspec(range(4)), dict(k0, lora="a" * 24)),
        ("text_255", tspec(range(4)), dict(k0, lora="a" * 255)),
        ("text_256", tspec(range(4)), dict(k0, lora="a" * 256)),
        ("mm_one", tspec(range(16)), dict(k0, mm=[("mmhash-0123456789abcdef", 3)])),
        ("mm_negative_offset", tspec(range(16)), dict(k0, mm=[("img", -5)])),
        ("mm_big_offsets", tspec(range(16)),
         dict(k0, mm=[("a", -2147483649), ("b", 2147483648), ("c", -(1 << 40)),
                      ("d", (1 << 62) + 5), ("e", -(1 << 63)), ("f", (1 << 63) - 1)])),
        ("mm_int_edges", tspec(range(4)),
         dict(k0, mm=[("x", v) for v in (-1, -24, -25, -256, -257, -65536, -65537, 255, 256,
                                          65535, 65536, -2147483648, 2147483647)])),
        ("mm_lora_salt_embeds", tspec(range(16)),
         dict(k0, lora="lora-x", mm=[("m1", 0), ("m2", 9)], salt="salt-y",
              embeds=hashlib.sha256(b"embeds-0").digest())),
        ("embeds_only", tspec(range(16)), dict(k0, embeds=hashlib.sha256(b"e").digest())),
        # CPython shares "" and one-character strings: the second one is a BINGET.
        ("singleton_lora_salt", tspec(range(4)), dict(k0, lora="a", salt="a")),
        ("singleton_mm_ids", tspec(range(4)), dict(k0, mm=[("z", 0), ("z", 1), ("\u00e9", 2),
                                                        ("\u00e9", 3), ("\u0100", 3),
                                                        ("\u0100", 3)])),
        ("singleton_empty", tspec(range(4)), dict(k0, lora="", mm=[("", 0)])),
        # Pickle frame boundaries (64 KiB) inside the token tuple and around big strs.
        ("frame_tokens_21833", tspec([1000], 21833), k0),
        ("frame_tokens_21834", tspec([1000], 21834), k0),
        ("frame_tokens_21835", tspec([1000], 21835), k0),
        ("frame_tokens_40000", tspec([70000], 40000), k0),
        ("frame_str_65535", tspec(range(10)), dict(k0, lora=("a", 65535), salt="b")),
        ("frame_str_65536", tspec(range(10)), dict(k0, lora=("a", 65536), salt="b")),
        ("frame_str_70000_last", tspec(range(10)), dict(k0, lora=("a", 70000))),
        ("frame_str_tiny_tail", tspec([]), dict(k0, lora=("\u00e9", 40000))),
        ("frame_two_big", tspec([5], 30000), dict(k0, lora=("q", 100000),
                                                   mm=[(("r", 70000), 1)], salt="s")),
    ]
    return cases


def fresh(s):
    """A new str object equal to s, as vLLM gets from decoding a request.

    Pickle memoizes by object identity, so keys must not share objects the way string
    literals in this script do; decoding keeps CPython's shared "" and 1-character
    latin-1 strings, exactly as any decoded string would.
    """
    return None if s is None else s.encode("utf-8").decode("utf-8")


def build_keys(keys):
    """The Python extra_keys tuple (lora + mm + salt + embeds), or None."""
    extra = []

    def s(v):
        return fresh(v[0] * v[1] if isinstance(v, tuple) else v)

    if keys["lora"] is not None:
        extra.append(s(keys["lora"]))
    for ident, off in keys["mm"]:
        extra.append((s(ident), off))
    if keys["salt"]:
        extra.append(s(keys["salt"]))
    if keys["embeds"] is not None:
        extra.append(keys["embeds"])
    return tuple(extra) if extra else None


def keys_json(keys):
    def s(v):
        if v is None:
            return None
        return sspec(v[0], v[1]) if isinstance(v, tuple) else sspec(v)

    return {
        "lora": s(keys["lora"]),
        "mm": [{"id": s(i), "offset": o} for i, o in keys["mm"]],
        "salt": s(keys["salt"]),
        "embeds_hex": None if keys["embeds"] is None else keys["embeds"].hex(),
    }


def gen_blocks(rng):
    out = []
    for algo in ALGOS:
        fn = HASH_FNS[algo]
        root = init_none_hash(fn, "0")
        dlen = len(root)
        parents = [None, bytes(dlen), b"\xff" * dlen, bytes(rng.randrange(256) for _ in range(dlen))]
        for name, toks, keys in block_cases(rng):
            for pi, parent in enumerate(parents if name == "plain16" else parents[:1]):
                tokens = expand_tokens(toks)
                extra = build_keys(keys)
                value = (parent if parent else root, tuple(tokens), extra)
                digest = hash_block_tokens(fn, root, parent, tokens, extra)
                assert digest == fn(value)
                v = {
                    "name": f"{name}/p{pi}",
                    "algo": algo,
                    "seed": sspec("0"),
                    "parent_hex": None if parent is None else parent.hex(),
                    "tokens": toks,
                    "keys": keys_json(keys),
                    "digest_hex": digest.hex(),
                    "u64": str(maybe_convert_block_hash(digest)),
                }
                v.update(encoding_fields(algo, value))
                out.append(v)
    return out


def chain_cases(rng):
    long_tokens = [rng.randrange(0, 1 << 32) for _ in range(200)]
    mm = [("img-aaaa", 5, 10), ("img-bbbb", 15, 3), ("img-cccc", 18, 20), ("aud-dddd", 40, 1),
          ("vid-eeee", 44, 30)]
    return [
        # name, seed, tokens, hash_block_size, block_size, lora, salt, mm, embeds
        ("spec_unsalted", "0", list(range(1, 9)), 4, 4, None, None, [], False),
        ("lora_every_block", "0", list(range(1, 9)), 4, 4, "adapter-A", None, [], False),
        ("salt_first_block", "0", list(range(1, 9)), 4, 4, None, "tenant-salt", [], False),
        ("lora_then_salt", "0", list(range(1, 9)), 4, 4, "adapter-A", "tenant-salt", [], False),
        ("incomplete_tail", "0", list(range(1, 7)), 4, 4, None, None, [], False),
        ("no_full_block", "0", [1, 2, 3], 4, 4, None, None, [], False),
        ("long16", "42", long_tokens, 16, 16, None, None, [], False),
        ("long16_lora_salt", "random", long_tokens, 16, 16, "l", "s", [], False),
        ("seed_empty", "", long_tokens[:64], 16, 16, None, "salt", [], False),
        ("hbs4_bs16", "0", long_tokens[:70], 4, 16, "adapter-A", "tenant-salt", [], False),
        ("hbs16_bs64", "7", long_tokens, 16, 64, None, None, [], False),
        ("hbs8_bs8_mm", "0", long_tokens[:80], 8, 8, None, None, mm, False),
        ("hbs4_bs12_mm_lora_salt", "0", long_tokens[:80], 4, 12, "lx", "sx", mm, False),
        ("mm_at_start", "0", long_tokens[:32], 16, 16, None, None, [("first", 0, 16),
                                                                ("second", 16, 16)], False),
        ("mm_spanning", "0", long_tokens[:64], 16, 16, None, None, [("wide", 3, 50)], False),
        ("mm_zero_length", "0", long_tokens[:48], 16, 16, None, None,
         [("z0", 8, 0), ("z1", 16, 0), ("z2", 20, 4)], False),
        ("mm_overlapping_items", "0", long_tokens[:48], 16, 16, None, None,
         [("big", 0, 30), ("inner", 2, 3), ("after", 20, 4)], False),
        ("embeds", "0", long_tokens[:48], 16, 16, "lora", "salt", [], True),
    ]


def gen_chains(rng):
    out = []
    for algo in ALGOS:
        fn = HASH_FNS[algo]
        for name, seed, tokens, hbs, bs, lora, salt, mm, embeds in chain_cases(rng):
            root = init_none_hash(fn, seed)
            n_hb = len(tokens) // hbs
            embeds_d = [hashlib.sha256(b"embeds-%d" % i).digest() for i in range(n_hb)] \
                if embeds else None
            req = Request(tokens, fresh(lora), fresh(salt),
                          [MMItem(fresh(i), o, n) for i, o, n in mm], embeds_d)
            fine = request_block_hashes(fn, root, hbs, req)
            phys = physical_block_hashes(fine, hbs, bs)
            out.append({
                "name": name,
                "algo": algo,
                "seed": sspec(seed),
                "root_hex": root.hex(),
                "tokens": tspec(tokens),
                "hash_block_size": hbs,
                "block_size": bs,
                "lora": sspec(lora),
                "salt": sspec(salt),
                "mm": [{"id": sspec(i), "offset": o, "length": n} for i, o, n in mm],
                "embeds_hex": None if embeds_d is None else [d.hex() for d in embeds_d],
                "hash_hex": [h.hex() for h in fine],
                "block_hex": [h.hex() for h in phys],
                "block_u64": [str(maybe_convert_block_hash(h)) for h in phys],
                # BlockHashListWithBlockSize, older form: the k fine hashes concatenated.
                "block_concat_u64": [str(maybe_convert_block_hash(
                    b"".join(fine[j * (bs // hbs):(j + 1) * (bs // hbs)])))
                    for j in range(len(phys))],
            })
    return out


# ---- cross-checks against published vectors ----

# kvcache-ai/Mooncake mooncake-conductor/tests/fixtures/hash_golden_vectors.json (sha256_cbor,
# generated with vLLM 0.22.0 semantics and cbor2 6.1.1) and hash_golden_vectors_sha256.json
# (sha256, CPython 3.12 pickle protocol 5, vLLM v0.22.1rc0-459-g462ef83d5).
MOONCAKE = [
    ("sha256_cbor", "0", None, None, "4e1195df020de59e0d65a33a4279f1183e7ae4e5d980e309f8b55adff2e61c3e",
     ["c9d58ba695280d69b243e1e0df813136ca9196b286fb1a021e0b2e028ef071cb",
      "24125b23e68883b5c2141db2959d48433fe6bde2f26bd914efad121d154ab2d6"],
     [2164874634404590027, 17270480062156288726]),
    ("sha256_cbor", "0", "adapter-A", None, None,
     ["1424c0ec536f82188b592f263601d4e48c0255081c5f1e9225163c6d611a5222",
      "4a2ec941640a8f2470869ec2b3cf6bdd90e2be83b21807b628ac9abe9341eea9"], None),
    ("sha256_cbor", "0", None, "tenant-salt", None,
     ["3be45574566e2f3c51c9f254d9627cf113382b627aeaefe8b661d66cfa089359",
      "22dea68f80ff7f40243dfb906a33db02571905c78a3b42153a56de5ad08c661a"], None),
    ("sha256_cbor", "0", "adapter-A", "tenant-salt", None,
     ["22977da6c71098507264dbf4161d451c2d98494c5c146717f36787e184b36040",
      "6a3cd7de2626c2d2982eb5bc9d4878a49745c3784bde8a2334ffac47286bb866"], None),
    ("sha256", "0", None, None, "1973e23848344dc43a988a9b478663803cfffe1243480253f9a3cf004b14aa7c",
     ["762b2e7e1520febd3a0aedb7358e8602facf3924440e18538fce057e23bae91d",
      "9e62b5a7ec298f33cb4c7d9e00b659874bb2432d23ad6879ad1746592a2b036b"],
     [10362225831949560093, 12472515041799373675]),
    ("sha256", "0", "adapter-A", None, None,
     ["5c5d9e04e03de9f2f4a9f38766c4d0fb0e207ccf5d2fb3b272c50117f336ae0c",
      "bde66cc24757972cc88e0fe62079d85934868c2733874ffa1c54ff679604f61a"], None),
    ("sha256", "0", None, "tenant-salt", None,
     ["373c09c29ab08b91b13bf1a67e0a461990572d476016c064b6ba6b75c163ceb1",
      "141900dd6fe59d22764357a125ecf4d670923bb12ad705a520de0e98c7338d5d"], None),
    ("sha256", "0", "adapter-A", "tenant-salt", None,
     ["dacd8a5addba8cf4b89589bedab04999b3676299a455ba3e085cc7777be6b328",
      "55575bd9b63ced6a3dc36c355afbb5f551599533795c26d27d8b5fc836681618"], None),
]


def check_published():
    for algo, seed, lora, salt, root_hex, digests, u64s in MOONCAKE:
        fn = HASH_FNS[algo]
        root = init_none_hash(fn, seed)
        if root_hex:
            assert root.hex() == root_hex, (algo, "root")
        req = Request(list(range(1, 9)), fresh(lora), fresh(salt))
        got = request_block_hashes(fn, root, 4, req)
        assert [h.hex() for h in got] == digests, (algo, lora, salt)
        if u64s:
            assert [maybe_convert_block_hash(h) for h in got] == u64s, (algo, "u64")
    # Notes (vllm-interop.md A3, A8): CBOR of "0" is 61 30; pickle framing of a root.
    assert cbor2.dumps("0", canonical=True) == b"\x61\x30"
    assert pickle.dumps("0", protocol=5).hex() == "80059505000000000000008c0130942e"


def dumps_lines(doc):
    """JSON with one vector per line: compact, yet diffs stay readable."""
    parts = []
    for key, val in doc.items():
        if isinstance(val, list):
            body = ",\n".join(json.dumps(v, separators=(",", ":")) for v in val)
            parts.append(f"{json.dumps(key)}: [\n{body}\n]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(val)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("-o", "--output",
                    default=os.path.join(here, "..", "data", "vllm_hash_vectors.json"))
    args = ap.parse_args()

    assert pickle.HIGHEST_PROTOCOL == 5, "vLLM hashes with pickle protocol 5"
    check_published()
    rng = random.Random(20240601)
    doc = {
        "description": "vLLM v1 prefix-cache block hash vectors; see tests/hash/gen_vectors.py",
        "python": sys.version.split()[0],
        "pickle_protocol": pickle.HIGHEST_PROTOCOL,
        "cbor2": importlib.metadata.version("cbor2"),
        "xxhash": xxhash.VERSION,
        "libxxhash": xxhash.XXHASH_VERSION,
        "roots": gen_roots(),
        "blocks": gen_blocks(rng),
        "chains": gen_chains(rng),
    }
    with open(args.output, "w", encoding="ascii") as f:
        f.write(dumps_lines(doc))
    print(f"wrote {args.output}: {len(doc['roots'])} roots, {len(doc['blocks'])} blocks, "
          f"{len(doc['chains'])} chains")


if __name__ == "__main__":
    main()
