#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Expand tests/rdma/suite.list into the entry file suite-runner.sh reads.

Usage: expand-suite.py SUITE_LIST BUILD_DIR OUT

Each output line is NAME<TAB>TIMEOUT<TAB>SH COMMAND. "@meson SUITE" lines
become one entry per test registered in that meson suite (from
`meson introspect --tests BUILD_DIR`): its env, workdir and argv quoted for
sh. Prints the names of host executables the entries need that are not built
yet, one per line prefixed "MISSING ", on stdout.
"""
import json
import os
import re
import shlex
import subprocess
import sys


def meson_tests(build_dir, suite):
    if not os.path.isfile(os.path.join(build_dir, "build.ninja")):
        print(f"expand-suite: {build_dir} is not a configured meson build dir; "
              f"@meson {suite} expands to nothing", file=sys.stderr)
        return []
    try:
        out = subprocess.run(["meson", "introspect", "--tests", build_dir],
                             check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"expand-suite: meson introspect failed: {e}", file=sys.stderr)
        return []
    entries = []
    for t in json.loads(out):
        # meson reports suites as "project:suite" (or just "suite")
        if not any(s == suite or s.endswith(":" + suite) for s in t.get("suite", [])):
            continue
        parts = [f"export {k}={shlex.quote(v)}" for k, v in sorted(t.get("env", {}).items())]
        parts.append(f"cd {shlex.quote(t.get('workdir') or build_dir)}")
        parts.append("exec " + shlex.join(t["cmd"]))
        timeout = int(t.get("timeout") or 0) or 600
        exe = t["cmd"][0]
        if os.path.isabs(exe) and not os.path.exists(exe):
            print("MISSING " + exe)
        name = re.sub(r"\s+", "_", t["name"])
        entries.append((name, timeout, "; ".join(parts)))
    return entries


def main():
    src, build_dir, out = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
    entries = []
    with open(src) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@meson"):
                entries += meson_tests(build_dir, line.split()[1] if len(line.split()) > 1 else "rdma")
                continue
            fields = line.split(None, 2)
            if len(fields) < 3 or not fields[1].isdigit():
                sys.exit(f"{src}:{n}: expected NAME TIMEOUT COMMAND")
            entries.append((fields[0], int(fields[1]), f"cd {shlex.quote(build_dir)}; {fields[2]}"))
    names = [e[0] for e in entries]
    dup = {x for x in names if names.count(x) > 1}
    if dup:
        sys.exit(f"{src}: duplicate entry names {sorted(dup)}")
    with open(out, "w") as f:
        for name, timeout, cmd in entries:
            if "\t" in cmd or "\n" in cmd:
                sys.exit(f"entry {name}: command has a tab or newline")
            f.write(f"{name}\t{timeout}\t{cmd}\n")


if __name__ == "__main__":
    main()
