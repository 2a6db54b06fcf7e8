# SPDX-License-Identifier: Apache-2.0
"""A test double of vLLM's KV-event publisher (vllm/distributed/kv_events.py).

Wire format, byte for byte (see /work/shared/research/vllm-interop.md, Part B):
  * PUB messages of 3 frames [topic, seq (8 bytes big-endian), msgpack(KVEventBatch)];
  * a ROUTER replay socket: request [identity, b"", start_seq8], reply one
    [identity, b"", seq8, payload] per buffered batch with seq >= start, then
    [identity, b"", b"\\xff" * 8, b""];
  * KVEventBatch = [ts, events, data_parallel_rank] ([ts, events] for v0.9); events
    array-like (tag first, every field of the generation) or maps ("type" first,
    fields whose default is None omitted when None), as msgspec writes them.

python3-msgpack with use_bin_type=True writes exactly what msgspec does for these
shapes (float64 for floats, shortest ints with uint64 for big positives, str8 for
32..255-byte strings, bin for bytes), which test_wire.py checks against the notes.

The socket is an XPUB rather than a PUB: the bytes sent are the same, and the
subscription message tells the test when the subscriber is connected (a PUB drops
everything sent before that, the "slow joiner").

Each engine keeps two records of its cache as a multiset {(adapter, key, tier): copies}:
`truth`, what the engine holds, and `view`, what an ingest that follows the protocol
can know: equal to truth except after a lossy recovery (a gap without replay, a replay
that timed out or reached past the engine's buffer), where the ingest purges and
rebuilds from the batch it resumes at.
"""

import collections
import os
import random
import time
import zlib

import msgpack
import zmq

END_SEQ = b"\xff" * 8

# Fields per generation, in declaration order (the array-like layout).
STORED_FIELDS = {
    "v0.9": ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id"],
    "v0.11": ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
              "medium"],
    "v0.15": ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
              "medium", "lora_name"],
    "stable": ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
               "medium", "lora_name", "extra_keys", "group_idx"],
    "latest": ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
               "medium", "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind",
               "kv_cache_spec_sliding_window"],
}
REMOVED_FIELDS = {
    "v0.9": ["block_hashes"],
    "v0.11": ["block_hashes", "medium"],
    "v0.15": ["block_hashes", "medium"],
    "stable": ["block_hashes", "medium", "group_idx"],
    "latest": ["block_hashes", "medium", "group_idx"],
}
# Fields declared with a default (None): omitted from maps when None.
DEFAULTED = {"extra_keys", "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window"}


def encode_event(ev, fmt, gen):
    """ev: dict with "type" and field values (missing fields are None)."""
    t = ev["type"]
    if t == "AllBlocksCleared":
        fields = []
    elif t == "BlockStored":
        fields = STORED_FIELDS[gen]
    elif t == "BlockRemoved":
        fields = REMOVED_FIELDS[gen]
    else:
        fields = [k for k in ev if k != "type"]
    if fmt == "array":
        return [t] + [ev.get(f) for f in fields]
    out = {"type": t}
    for f in fields:
        v = ev.get(f)
        if v is None and f in DEFAULTED:
            continue
        out[f] = v
    return out


def encode_batch(ts, events, fmt="array", gen="latest", dp_rank=0):
    evs = [encode_event(e, fmt, gen) for e in events]
    batch = [ts, evs] if gen == "v0.9" else [ts, evs, dp_rank]
    return msgpack.packb(batch, use_bin_type=True)


def hash_value(h):
    """The 64-bit key of an event hash: ints mod 2^64, digests by their last 8 bytes."""
    if isinstance(h, bytes):
        return int.from_bytes(h, "big") & (2**64 - 1)
    return h & (2**64 - 1)


class Engine:
    """One simulated engine: XPUB + optional ROUTER, seq, replay buffer, cache records."""

    TIERS = {"GPU": 0, "CPU": 1, "DISK": 2}

    def __init__(self, ctx, name, worker, *, dp_rank=0, fmt="array", gen="latest",
                 replay=True, buffer_steps=10000, bytes_hashes=0, model="m",
                 block_size=4, seed=1, extra=""):
        self.name, self.worker, self.dp_rank = name, worker, dp_rank
        self.fmt, self.gen = fmt, gen
        self.bytes_hashes = bytes_hashes
        self.model, self.block_size, self.extra = model, block_size, extra
        self.rng = random.Random(seed)
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind("tcp://127.0.0.1:*")
        self.endpoint = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.router = None
        self.replay_endpoint = ""
        if replay:
            self.router = ctx.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.bind("tcp://127.0.0.1:*")
            self.replay_endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.seq = 0
        self.buf = collections.deque(maxlen=buffer_steps)
        self.truth = collections.Counter()
        self.view = collections.Counter()
        self.history = []  # (seq, events) of the current engine process
        self.last_sent = None
        self.dropped = set()
        self.mute_replays = 0
        self.subscribed = False
        self.keys_seen = set()  # (adapter, key)
        self.stats = collections.Counter()
        self._pending = collections.Counter()

    # ---- configuration line for kvdex-ingest ----
    def config_line(self):
        parts = [f"engine {self.name}", f"endpoint={self.endpoint}"]
        if self.replay_endpoint:
            parts.append(f"replay={self.replay_endpoint}")
        parts += [f"model={self.model}", f"block_size={self.block_size}",
                  "hash_scheme=vllm:sha256_cbor:64", f"worker={self.worker}"]
        if self.extra:
            parts.append(self.extra)
        return " ".join(parts)

    # ---- the cache model ----
    def _apply(self, rec, events, clamp):
        for ev in events:
            t = ev["type"]
            if t == "AllBlocksCleared":
                rec.clear()
                continue
            if t not in ("BlockStored", "BlockRemoved"):
                continue
            tier = self.TIERS.get(ev.get("medium") or "GPU", 3)
            adapter = ev.get("_adapter", "")
            for h in ev["block_hashes"]:
                k = (adapter, hash_value(h), tier)
                if t == "BlockStored":
                    rec[k] += 1
                    self.keys_seen.add((adapter, hash_value(h)))
                elif rec[k] > 0:
                    rec[k] -= 1
                    if rec[k] == 0:
                        del rec[k]
                elif not clamp:
                    raise AssertionError(f"{self.name}: removing {k} not held")

    def view_reset_at(self, seq):
        """The ingest purges and resumes at `seq`: the view is rebuilt from there."""
        self.view = collections.Counter()
        for s, evs in self.history:
            if s >= seq:
                self._apply(self.view, evs, clamp=True)
        self.stats["view_resets"] += 1

    # ---- sending ----
    def wait_subscribed(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not self.subscribed:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no subscriber")
            if self.pub.poll(50):
                msg = self.pub.recv()
                if msg[:1] == b"\x01":
                    self.subscribed = True

    def send(self, events, drop=False, raw=None):
        seq = self.seq
        self.seq += 1
        payload = raw if raw is not None else encode_batch(
            1700000000.5 + seq, events, self.fmt, self.gen, self.dp_rank)
        if drop:
            self.dropped.add(seq)
        else:
            self.pub.send_multipart([b"", seq.to_bytes(8, "big"), payload])
        self.buf.append((seq, payload))
        self.history.append((seq, events))
        self._apply(self.truth, events, clamp=False)
        self._apply(self.view, events, clamp=True)
        if not drop:
            if (self.last_sent is not None and seq > self.last_sent + 1
                    and not self.replay_endpoint):
                # no replay: the ingest purges and goes on from this batch
                self.view_reset_at(seq)
            self.last_sent = seq
        self.stats["dropped" if drop else "sent"] += 1
        return seq

    def restart(self):
        """A new engine process: seq from 0, empty cache, no AllBlocksCleared."""
        self.seq = 0
        self.buf.clear()
        self.truth.clear()
        self.view.clear()
        self.history = []
        self.last_sent = None
        self.dropped = set()
        self.stats["restarts"] += 1

    def service_replay(self):
        if self.router is None:
            return
        while self.router.poll(0):
            frames = self.router.recv_multipart()
            if len(frames) != 3:
                continue
            ident, _, start8 = frames
            start = int.from_bytes(start8, "big")
            self.stats["replay_requests"] += 1
            if self.mute_replays > 0:
                # ignored: the ingest times out, purges and resumes at the first live
                # batch it buffered (the first one sent at or after `start`)
                self.mute_replays -= 1
                sent = [s for s, _ in self.history
                        if start <= s <= self.last_sent and s not in self.dropped]
                self.view_reset_at(min(sent) if sent else self.seq)
                continue
            items = [(s, p) for s, p in self.buf if s >= start]
            if items and items[0][0] > start:
                self.view_reset_at(items[0][0])  # the buffer no longer reaches back
            for s, p in items:
                self.router.send_multipart([ident, b"", s.to_bytes(8, "big"), p])
            self.router.send_multipart([ident, b"", END_SEQ, b""])

    # ---- workload ----
    def new_hash(self):
        if self.bytes_hashes:
            return self.rng.randbytes(self.bytes_hashes)
        return self.rng.getrandbits(64)

    def random_events(self, pool, media=("GPU",), loras=(None,)):
        """A batch of 1-3 random events: stores (new chains or duplicates), removals."""
        evs = []
        for _ in range(self.rng.randint(1, 3)):
            r = self.rng.random()
            held = [k for k, c in self.truth.items() if c > 0]
            if r < 0.25 and held:
                adapter, key, tier = self.rng.choice(held)
                h = pool.original(key)
                medium = [m for m, t in self.TIERS.items() if t == tier]
                medium = medium[0] if medium else "WEIRD"
                ev = {"type": "BlockRemoved", "block_hashes": [h], "medium": medium,
                      "group_idx": 0, "_adapter": adapter}
                if self.gen in ("v0.9",):
                    ev["medium"] = None
                    if tier != 0:
                        continue
                evs.append(ev)
                self._apply_pending(ev)
                continue
            n = self.rng.randint(1, 4)
            medium = self.rng.choice(media)
            lora = self.rng.choice(loras)
            sub = pool.for_adapter(lora[2] if lora else "")
            hashes = [sub.pick(self.rng) for _ in range(n)]
            ev = {"type": "BlockStored", "block_hashes": hashes,
                  "parent_block_hash": sub.pick(self.rng) if self.rng.random() < 0.5 else None,
                  "token_ids": [self.rng.randrange(150000) for _ in range(n * self.block_size)],
                  "block_size": self.block_size, "lora_id": None, "medium": medium,
                  "lora_name": None, "extra_keys": [None] * n, "group_idx": 0,
                  "kv_cache_spec_kind": "full_attention",
                  "kv_cache_spec_sliding_window": None, "_adapter": ""}
            if self.gen == "v0.9":
                ev["medium"] = None
            if lora is not None:
                kind, val, adapter = lora
                ev[kind] = val
                if kind == "lora_name":
                    ev["extra_keys"] = [[val]] * n
                ev["_adapter"] = adapter
            evs.append(ev)
            self._apply_pending(ev)
        # _apply_pending only kept removals consistent within this batch; undo it
        for k, c in self._pending.items():
            self.truth[k] -= c
            if self.truth[k] == 0:
                del self.truth[k]
        self._pending = collections.Counter()
        return evs

    def _apply_pending(self, ev):
        """Reflect an event of a batch being built in truth (undone before send)."""
        tier = self.TIERS.get(ev.get("medium") or "GPU", 3)
        for h in ev["block_hashes"]:
            k = (ev["_adapter"], hash_value(h), tier)
            d = 1 if ev["type"] == "BlockStored" else -1
            self.truth[k] += d
            self._pending[k] += d
            if self.truth[k] == 0:
                del self.truth[k]

    def close(self):
        self.pub.close(0)
        if self.router is not None:
            self.router.close(0)


class HashPool:
    """Hashes shared between engines (so keys have several holders), int or bytes.

    LoRA blocks draw from a pool of their adapter (vLLM puts the LoRA name in the hash,
    so one hash never belongs to two adapters)."""

    def __init__(self, rng, n, bytes_len=0, parent=None):
        self.items = []
        self.by_key = parent.by_key if parent is not None else {}
        self.subs = {}
        self.n, self.bytes_len = n, bytes_len
        for _ in range(n):
            h = rng.randbytes(bytes_len) if bytes_len else rng.getrandbits(64)
            self.items.append(h)
            self.by_key[hash_value(h)] = h

    def for_adapter(self, adapter):
        if not adapter:
            return self
        if adapter not in self.subs:
            rng = random.Random(zlib.crc32(adapter.encode()) ^ self.bytes_len)
            self.subs[adapter] = HashPool(rng, self.n // 2, self.bytes_len, self)
        return self.subs[adapter]

    def pick(self, rng):
        return rng.choice(self.items)

    def original(self, key):
        return self.by_key[key]


def strip_private(events):
    return [{k: v for k, v in e.items() if not k.startswith("_")} for e in events]


def env_path(name):
    p = os.environ.get(name)
    if not p:
        raise SystemExit(f"{name} is not set")
    return p
