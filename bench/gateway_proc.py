"""A process and its descendants, for measuring a proxy whatever it spawns (LiteLLM's CLI may run
its server in a child; Parley's server runs in one process).

CPU is utime+stime of every live process in the tree plus cutime+cstime (what its reaped children
spent), from /proc; memory is the tree's summed resident set.
"""

from __future__ import annotations

import os

from bench.load import CLK_TCK


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def tree_cpu_seconds(pid: int) -> float:
    total = 0
    for member in descendants(pid):
        try:
            with open(f"/proc/{member}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:  # ended meanwhile: its time is now in its parent's cutime/cstime
            continue
        total += sum(int(value) for value in fields[11:15])
    return total / CLK_TCK


def tree_rss_kib(pid: int) -> int:
    total = 0
    for member in descendants(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total
