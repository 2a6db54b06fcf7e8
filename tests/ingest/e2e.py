#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of kvdex-ingest: simulated vLLM engines → kvdex-ingest → kvdexd.

  e2e.py SCENARIO     (mixed | lifecycle)

Starts its own kvdexd ($KVDEX_KVDEXD) and kvdex-ingest ($KVDEX_INGEST) on 127.0.0.1,
drives engines (tests/ingest/vllm_pub.py) through a scripted workload, waits (bounded
polls of the ingest's stats file) until the ingest has consumed everything, then looks
up every key ever stored ($KVDEX_INGEST_LOOKUP) and compares the holders with each
engine's own record of what it holds (its `view`; see vllm_pub.py). Exit 0 on equality.
Run with /usr/bin/python3 (Debian's python3-zmq and python3-msgpack).
"""

import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zmq  # noqa: E402

from vllm_pub import Engine, HashPool, env_path  # noqa: E402

MODEL = "m"
BLOCK_SIZE = 4
SCHEME = "vllm:sha256_cbor:64"


def wait_for(pred, timeout, what, tick=None):
    deadline = time.monotonic() + timeout
    while True:
        if tick:
            tick()
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_kv(path):
    try:
        with open(path) as f:
            return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    except FileNotFoundError:
        return None


class Harness:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.ctx = zmq.Context()

    def start_kvdexd(self):
        ready = os.path.join(self.tmp, "kvdexd.ready")
        log = open(os.path.join(self.tmp, "kvdexd.log"), "w")
        p = subprocess.Popen([env_path("KVDEX_KVDEXD"), "--listen-tcp", "127.0.0.1:0",
                              "--listen-unix", os.path.join(self.tmp, "kvdexd.sock"),
                              "--ready-file", ready, "--log-level", "notice"],
                             stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        kv = wait_for(lambda: read_kv(ready), 10, "kvdexd ready")
        self.servers = kv["tcp"]

    def write_config(self, engines, extra=()):
        self.conf = os.path.join(self.tmp, "ingest.conf")
        with open(self.conf + ".new", "w") as f:
            f.write(f"servers = {self.servers}\n")
            f.write("replay-timeout-ms = 400\nidle-replay-ms = 0\n")
            for line in extra:
                f.write(line + "\n")
            for e in engines:
                f.write(e.config_line() + "\n")
        os.rename(self.conf + ".new", self.conf)

    def start_ingest(self):
        self.ready = os.path.join(self.tmp, "ingest.ready")
        self.stats = os.path.join(self.tmp, "ingest.stats")
        self.ingest_log = os.path.join(self.tmp, "ingest.log")
        log = open(self.ingest_log, "w")
        p = subprocess.Popen([env_path("KVDEX_INGEST"), "--config", self.conf,
                              "--ready-file", self.ready, "--stats-file", self.stats,
                              "--stats-interval", "0.05", "--log-level", "info"],
                             stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        self.ingest = p
        wait_for(lambda: read_kv(self.ready), 10, "kvdex-ingest ready")

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        rcs = [p.returncode for p in self.procs]
        self.procs = []
        return rcs

    def stats_now(self):
        return read_kv(self.stats) or {}

    def sync(self, engines, timeout=30):
        """Until the ingest has consumed every batch each engine sent."""
        def done():
            st = self.stats_now()
            for e in engines:
                p = f"engine.{e.name}."
                if e.last_sent is None:
                    continue
                if (st.get(p + "state") != "live" or st.get(p + "buffered") != "0"
                        or st.get(p + "have_seq") != "1"
                        or int(st.get(p + "last_seq", -1)) != e.seq - 1):
                    return None
            return st

        def tick():
            for e in engines:
                e.service_replay()
        return wait_for(done, timeout, "the ingest to catch up", tick)

    def lookup(self, queries):
        out = subprocess.run([env_path("KVDEX_INGEST_LOOKUP"), "--servers", self.servers],
                             input="".join(queries), capture_output=True, text=True,
                             timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"ingest-lookup failed: {out.stderr}")
        return out.stdout.splitlines()


def expected_holders(engines):
    """{(adapter, key): sorted [(worker, dp, fastest tier)]} from each engine's view."""
    exp = collections.defaultdict(dict)
    for e in engines:
        for (adapter, key, tier), c in e.view.items():
            if c <= 0:
                continue
            who = (e.worker, e.dp_rank)
            cur = exp[(adapter, key)].get(who)
            exp[(adapter, key)][who] = tier if cur is None else min(cur, tier)
    return {k: sorted((w, d, t) for (w, d), t in v.items()) for k, v in exp.items()}


def compare(h, engines, all_engines=None):
    keys = set()
    for e in (all_engines or engines):
        keys |= e.keys_seen
    exp = expected_holders(engines)
    by_adapter = collections.defaultdict(list)
    for adapter, key in keys:
        by_adapter[adapter].append(key)
    queries, order = [], []
    for adapter, ks in sorted(by_adapter.items()):
        queries.append(f"ns {MODEL} {adapter or '-'} - {BLOCK_SIZE} {SCHEME}\n")
        for k in sorted(ks):
            queries.append(f"{k}\n")
            order.append((adapter, k))
    lines = h.lookup(queries)
    assert len(lines) == len(order), (len(lines), len(order))
    bad = 0
    held = 0
    for (adapter, k), line in zip(order, lines):
        parts = line.split()
        assert int(parts[0]) == k
        got = sorted(tuple(int(x) for x in p.split(":")) for p in parts[1:])
        want = exp.get((adapter, k), [])
        held += bool(want)
        if got != want:
            bad += 1
            if bad <= 20:
                print(f"MISMATCH adapter={adapter!r} key={k}: index {got} engines {want}")
    print(f"compared {len(order)} keys ({held} held by someone): {bad} mismatches")
    return bad == 0 and held > 0


def run_steps(engines, steps, pool, rng, script, media, loras):
    """Random batches on random engines; script[i] = callable run before step i."""
    for i in range(steps):
        if i in script:
            script[i]()
        e = rng.choice(engines)
        e.send(e.random_events(pool, media.get(e.name, ("GPU",)), loras.get(e.name, (None,))))
        if i % 8 == 0:
            for x in engines:
                x.service_replay()


def scenario_mixed(h):
    rng = random.Random(7)
    ctx = h.ctx
    A = Engine(ctx, "A", 11, fmt="array", gen="latest", seed=1, extra="dp_rank=0")
    B = Engine(ctx, "B", 12, fmt="map", gen="latest", seed=2, bytes_hashes=32)
    C = Engine(ctx, "C", 13, fmt="array", gen="v0.9", replay=False, seed=3,
               extra="lora_map=7:chat-lora")
    D = Engine(ctx, "D", 14, fmt="array", gen="v0.11", buffer_steps=4, seed=4, dp_rank=1,
               extra="dp_size=2")
    E = Engine(ctx, "E", 15, fmt="map", gen="stable", seed=5, bytes_hashes=16)
    F = Engine(ctx, "F", 16, fmt="array", gen="v0.15", seed=6)
    engines = [A, B, C, D, E, F]
    pools = {"int": HashPool(rng, 120), "b32": HashPool(rng, 120, 32),
             "b16": HashPool(rng, 120, 16)}
    h.write_config(engines)
    h.start_ingest()
    for e in engines:
        e.wait_subscribed()
    media = {"A": ("GPU", "GPU", "CPU"), "D": ("GPU", "CPU", "DISK", "WEIRD"),
             "F": ("GPU", "CPU")}
    loras = {"A": (None, None, ("lora_name", "sql-lora", "sql-lora")),
             "C": (None, ("lora_id", 7, "chat-lora"), ("lora_id", 9, "lora-9")),
             "F": (None, ("lora_name", "sql-lora", "sql-lora"))}

    def step(e, n, drop_at=()):
        pool = pools["b32"] if e.bytes_hashes == 32 else (
            pools["b16"] if e.bytes_hashes == 16 else pools["int"])
        for i in range(n):
            e.send(e.random_events(pool, media.get(e.name, ("GPU",)),
                                   loras.get(e.name, (None,))), drop=i in drop_at)
            if i % 4 == 0:
                for x in engines:
                    x.service_replay()

    for _ in range(5):
        for e in engines:
            step(e, 10)
    # duplicate stores of the same hash, one removal: still held
    h0 = pools["int"].items[0]
    dup = {"type": "BlockStored", "block_hashes": [h0], "parent_block_hash": None,
           "token_ids": [1, 2, 3, 4], "block_size": 4, "lora_id": None, "medium": "GPU",
           "lora_name": None, "extra_keys": [None], "group_idx": 0,
           "kv_cache_spec_kind": "full_attention", "_adapter": ""}
    A.send([dup])
    A.send([dup])
    A.send([{"type": "BlockRemoved", "block_hashes": [h0], "medium": "GPU", "group_idx": 0,
             "_adapter": ""}])
    # drops that the replay buffer covers (A, B, E, F), a drop without replay (C),
    # drops past D's 4-batch buffer
    step(A, 12, drop_at=(3, 4, 9))
    step(B, 12, drop_at=(5,))
    step(E, 8, drop_at=(2, 3))
    step(F, 8, drop_at=(1,))
    step(C, 8, drop_at=(4,))
    step(D, 12, drop_at=(2, 3, 4, 5, 6, 7))
    h.sync(engines)
    # a replay that is never answered (timeout), malformed payloads, an unknown tag
    B.mute_replays = 1
    step(B, 6, drop_at=(1,))
    A.send([], raw=b"\x93\xcb\x41\xd9\x54\xfc\x40\x20\x00\x00\x91\x9a\xabBlockSt")
    A.send([], raw=b"\x93\xcb\x41\xd9\x54\xfc\x40\x20\x00\x00\xdd\x7f\xff\xff\xff\x00")
    A.send([{"type": "BlockTouched", "block_hashes": [1, 2]}, dup])
    B.send([], raw=b"\x93\xcb\x41\xd9\x54\xfc\x40\x20\x00\x00\x91\x81\xa4type\x05\x00")
    h.sync(engines)
    # restarts (seq back to 0, empty cache, no clear), clears
    A.restart()
    C.restart()
    step(A, 10)
    step(C, 10)
    B.send([{"type": "AllBlocksCleared"}])
    step(B, 10)
    for _ in range(3):
        for e in engines:
            step(e, 10)
    st = h.sync(engines)
    ok = compare(h, engines)
    print({k: v for k, v in st.items() if not k.startswith("engine.")})
    print({k: v for k, v in st.items()
           if k.endswith((".gaps", ".replays_ok", ".replay_failed", ".purges", ".restarts"))})
    checks = {
        # drops close together may be covered by one replay: lower bounds
        "gaps": 6, "replays_ok": 4, "replay_failed": 2, "replay_too_old": 1,
        "replay_timeouts": 1, "restarts": 2, "purges": 5, "decode_errors": 3,
        "decode_truncated": 1, "decode_too_large": 1, "decode_wrong_type": 1,
        "decode_unknown_tag": 1, "events_cleared": 1,
        "unknown_medium": 1, "publish_errors": 0,
    }
    for k, want in checks.items():
        got = int(st.get(k, -1))
        good = got == 0 if want == 0 else got >= want
        if not good:
            print(f"COUNTER {k} = {got}, want {'0' if want == 0 else '>= %d' % want}")
            ok = False
    return ok


def scenario_lifecycle(h):
    """SIGHUP: an engine removed (purged after the grace), one added; silence purge."""
    rng = random.Random(11)
    ctx = h.ctx
    pool = HashPool(rng, 80)
    A = Engine(ctx, "A", 21, seed=21)
    B = Engine(ctx, "B", 22, seed=22, fmt="map")
    C = Engine(ctx, "C", 23, seed=23)
    extra = ["removal-grace-ms = 300", "silence-grace-ms = 1500", "idle-replay-ms = 300"]
    h.write_config([A, B], extra)
    h.start_ingest()
    for e in (A, B):
        e.wait_subscribed()
    for _ in range(20):
        for e in (A, B):
            e.send(e.random_events(pool))
    h.sync([A, B])
    ok = compare(h, [A, B])
    # reload: B removed, C added
    h.write_config([A, C], extra)
    h.ingest.send_signal(signal.SIGHUP)
    C.wait_subscribed()
    for _ in range(20):
        for e in (A, C):
            e.send(e.random_events(pool))
    wait_for(lambda: int(h.stats_now().get("purges_removed", 0)) >= 1, 10, "B's purge")
    h.sync([A, C])
    B.view.clear()
    ok = compare(h, [A, C], [A, B, C]) and ok
    # C goes silent past silence-grace-ms while A keeps talking: C is cleared
    t_end = time.monotonic() + 10
    while int(h.stats_now().get("purges_silence", 0)) < 1:
        A.send(A.random_events(pool))
        time.sleep(0.05)
        if time.monotonic() > t_end:
            raise TimeoutError("no silence purge")
    h.sync([A, C])
    C.view.clear()
    ok = compare(h, [A, C], [A, B, C]) and ok
    # C talks again: only what follows is known
    for _ in range(5):
        C.send(C.random_events(pool))
    h.sync([A, C])
    ok = compare(h, [A, C], [A, B, C]) and ok
    # A's last batch is lost: only an idle replay poll can find it
    A.send(A.random_events(pool), drop=True)
    st = h.sync([A, C])
    if int(st.get("engine.A.idle_replays", 0)) < 1 or int(st.get("engine.A.gaps", 0)) < 1:
        print("the dropped last batch was not found by an idle replay poll")
        ok = False
    return compare(h, [A, C], [A, B, C]) and ok


def main():
    scenario = sys.argv[1] if len(sys.argv) > 1 else "mixed"
    fn = {"mixed": scenario_mixed, "lifecycle": scenario_lifecycle}[scenario]
    with tempfile.TemporaryDirectory(prefix="kvdex-ingest-e2e-") as tmp:
        h = Harness(tmp)
        ok = False
        try:
            h.start_kvdexd()
            ok = fn(h)
        finally:
            rcs = h.stop_all()
            if rcs and any(rc != 0 for rc in rcs):
                print(f"exit statuses {rcs}")
                ok = False
            if not ok:
                for name in ("ingest.log", "kvdexd.log"):
                    p = os.path.join(tmp, name)
                    if os.path.exists(p):
                        print(f"---- {name} (tail)")
                        print("".join(open(p).readlines()[-40:]))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
