"""Summarize py-spy collapsed stacks (`--format raw`): where daphne's CPU goes, by function.

    python -m bench.profile_summary /tmp/prof/ws-200.txt [--top 30] [--match chat/]

Self %: samples whose innermost frame is the function. Total %: samples with the function anywhere
on the stack (counted once per sample). Idle samples (the event loop waiting in select/epoll, a
thread pool waiting on its queue) are excluded when py-spy was run with --idle off, its default.
"""

import argparse
import re
from collections import Counter

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3.12/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", default="", help="only functions whose file contains this in the Total list")
    args = parser.parse_args()
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    with open(args.path) as f:
        lines = f.read().splitlines()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        samples += n
        self_counts[frames[-1]] += n
        for f in set(frames):
            total_counts[f] += n
    print(f"{samples} samples")
    print("\n## self")
    for f, n in self_counts.most_common(args.top):
        print(f"{100 * n / samples:5.1f}%  {f}")
    print("\n## total")
    shown = 0
    for f, n in total_counts.most_common():
        if args.match and args.match not in f:
            continue
        print(f"{100 * n / samples:5.1f}%  {f}")
        shown += 1
        if shown >= args.top:
            break


if __name__ == "__main__":
    main()
