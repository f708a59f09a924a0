#!/usr/bin/env python3
"""Where a server's user-space instructions go, by our own source line.

Reads a callgrind dump made with `--dump-instr=yes` (the harness passes it through
`RINGLOOP_BENCH_VALGRIND_ARGS`), resolves every instruction address with `addr2line -i`
(inlined frames included) and charges its cost to the innermost frame that lies in this
repository. Inlining hides most of the hot path inside a few symbols (`run_once`, the
flush hook); this shows which of our lines the instructions come from.

usage: cg-attribute.py DUMP BINARY INSTR_PER_MSG [ROWS] [--symbols]
  INSTR_PER_MSG: the harness's figure for this dump, which gives the window's message
  count (total Ir / INSTR_PER_MSG); costs are printed per message.
"""
import collections
import os
import re
import subprocess
import sys

# Source paths are printed relative to the repository (this script's parent directory).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/"

OURS = ("/proactor/src/", "/runtime/src/", "/transports/src/", "/ssl/src/", "/benches/src/")


def read_costs(dump, binary_name):
    """Self cost per instruction address of `binary_name`, and the rest per object."""
    objects, current, last, skip_next = {}, None, 0, False
    costs, total = collections.Counter(), 0
    for raw in open(dump, errors="replace"):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(("ob=", "cob=")):
            m = re.match(r"c?ob=\((\d+)\)\s*(.*)", line)
            if m.group(2):
                objects[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                current = objects.get(m.group(1))
            continue
        if line.startswith("calls="):
            skip_next = True  # the next cost line is the call's inclusive cost
            continue
        if not (line[0] in "0123456789+-*"):
            continue
        parts = line.split()
        pos = parts[0]
        if pos.startswith("0x"):
            addr = int(pos, 16)
        elif pos[0] in "+-":
            addr = last + int(pos)
        elif pos == "*":
            addr = last
        else:
            addr = int(pos)
        last = addr
        if skip_next:
            skip_next = False
            continue
        cost = int(parts[-1]) if len(parts) >= 3 else 0
        total += cost
        if current and current.endswith("/" + binary_name):
            costs[addr] += cost
        else:
            costs[("object", (current or "?").split("/")[-1])] += cost
    return costs, total


def inline_chains(binary, addrs):
    """addr -> [(function, file:line)], innermost frame first."""
    out = subprocess.run(
        ["addr2line", "-i", "-f", "-C", "-a", "-e", binary] + [hex(a) for a in addrs],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    chains, addr, i = {}, None, 0
    while i < len(out):
        if out[i].startswith("0x"):
            addr = int(out[i], 16)
            chains[addr] = []
            i += 1
            continue
        chains[addr].append((out[i], out[i + 1] if i + 1 < len(out) else "?"))
        i += 2
    return chains


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) < 3:
        sys.exit(__doc__)
    dump, binary, per_message = args[0], args[1], float(args[2])
    rows = int(args[3]) if len(args) > 3 else 60
    costs, total = read_costs(dump, binary.split("/")[-1])
    messages = total / per_message
    addrs = [a for a in costs if isinstance(a, int)]
    chains = inline_chains(binary, addrs)
    by_line, by_symbol = collections.Counter(), collections.Counter()
    for addr in addrs:
        chain = chains.get(addr, [])
        ours = next(((f, loc) for f, loc in chain if any(o in loc for o in OURS)), None)
        if ours:
            name = re.sub(r"<.*?>|\{\{closure\}\}", "", ours[0])[-60:]
            key = (name, ours[1].split(" ")[0].removeprefix(REPO))
        else:
            key = ("(not ours) " + (chain[0][0][:50] if chain else "?"), "")
        by_line[key] += costs[addr]
        by_symbol[chain[-1][0][:100] if chain else "?"] += costs[addr]
    for key, cost in costs.items():
        if not isinstance(key, int):
            by_line[("(other object) " + key[1], "")] += cost
    print(f"total {total / messages:.1f} instructions per message")
    for (name, loc), cost in by_line.most_common(rows):
        print(f"{cost / messages:8.1f}  {name}  {loc}")
    if "--symbols" in sys.argv:
        print("--- by symbol ---")
        for name, cost in by_symbol.most_common(30):
            print(f"{cost / messages:8.1f}  {name}")


if __name__ == "__main__":
    main()
