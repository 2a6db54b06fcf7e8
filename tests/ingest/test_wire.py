#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The test publisher's encoder against the byte examples of vllm-interop.md Part B.

Seed "0", sha256_cbor, block_size 4, tokens 1..8 → hashes 2164874634404590027 and
17270480062156288726; ts 1700000000.5; dp rank 0. Exit 0 when every example matches.
Run with /usr/bin/python3 (Debian's python3-msgpack).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vllm_pub import encode_batch  # noqa: E402

H1, H2 = 2164874634404590027, 17270480062156288726
TS = 1700000000.5


def s(x):
    """msgpack fixstr of an ASCII string."""
    return bytes([0xa0 | len(x)]) + x.encode()


HDR = bytes.fromhex("93cb41d954fc40200000")
CF1 = bytes.fromhex("cf1e0b2e028ef071cb")
CF2 = bytes.fromhex("cfefad121d154ab2d6")
TOKENS = bytes.fromhex("980102030405060708")

STORED = {"type": "BlockStored", "block_hashes": [H1, H2], "parent_block_hash": None,
          "token_ids": list(range(1, 9)), "block_size": 4, "lora_id": None,
          "medium": "GPU", "lora_name": None, "extra_keys": [None, None], "group_idx": 0,
          "kv_cache_spec_kind": "full_attention", "kv_cache_spec_sliding_window": None}
REMOVED = {"type": "BlockRemoved", "block_hashes": [H2], "medium": "GPU", "group_idx": 0}
CLEARED = {"type": "AllBlocksCleared"}

CASES = [
    ("array/extra_keys Stored", encode_batch(TS, [STORED], "array", "stable"),
     HDR + b"\x91\x9a" + s("BlockStored") + b"\x92" + CF1 + CF2 + b"\xc0" + TOKENS
     + b"\x04\xc0" + s("GPU") + b"\xc0\x92\xc0\xc0\x00" + b"\x00"),
    ("array/extra_keys Removed", encode_batch(TS, [REMOVED], "array", "stable"),
     HDR + b"\x91\x94" + s("BlockRemoved") + b"\x91" + CF2 + s("GPU") + b"\x00" + b"\x00"),
    ("map/spec_kind Stored", encode_batch(TS, [STORED], "map", "latest"),
     HDR + b"\x91\x8b" + s("type") + s("BlockStored") + s("block_hashes") + b"\x92" + CF1
     + CF2 + bytes([0xb1]) + b"parent_block_hash" + b"\xc0" + s("token_ids") + TOKENS
     + s("block_size") + b"\x04" + s("lora_id") + b"\xc0" + s("medium") + s("GPU")
     + s("lora_name") + b"\xc0" + s("extra_keys") + b"\x92\xc0\xc0" + s("group_idx")
     + b"\x00" + bytes([0xb2]) + b"kv_cache_spec_kind" + s("full_attention") + b"\x00"),
    ("map/spec_kind Removed", encode_batch(TS, [REMOVED], "map", "latest"),
     HDR + b"\x91\x84" + s("type") + s("BlockRemoved") + s("block_hashes") + b"\x91" + CF2
     + s("medium") + s("GPU") + s("group_idx") + b"\x00" + b"\x00"),
    ("array AllBlocksCleared", encode_batch(TS, [CLEARED], "array", "latest"),
     HDR + b"\x91\x91" + bytes([0xb0]) + b"AllBlocksCleared" + b"\x00"),
    ("map AllBlocksCleared", encode_batch(TS, [CLEARED], "map", "latest"),
     HDR + b"\x91\x81" + s("type") + bytes([0xb0]) + b"AllBlocksCleared" + b"\x00"),
    ("v0.9 batch without dp rank", encode_batch(TS, [REMOVED], "array", "v0.9"),
     b"\x92" + HDR[1:] + b"\x91\x92" + s("BlockRemoved") + b"\x91" + CF2),
]


def main():
    bad = 0
    for name, got, want in CASES:
        if got != want:
            bad += 1
            print(f"FAIL {name}\n  got  {got.hex()}\n  want {want.hex()}")
        else:
            print(f"ok   {name}: {got.hex()}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
