"""``python -m bench.stacks DIR``: where the workers' time went, from the py-spy profiles that
``python -m bench --profile DIR`` wrote (collapsed stacks, one ``frame;frame;... count`` per line).

Prints each frame's share of the samples: "self" (the frame was running) and "inclusive" (it was on
the stack), the largest first.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def shares(paths: list[Path]) -> tuple[int, Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    return total, own, inclusive


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    paths = sorted(Path(argv[0]).glob("*.txt"))
    total, own, inclusive = shares(paths)
    if not total:
        print(f"no samples in {argv[0]}", file=sys.stderr)
        return 1
    print(f"{total} samples from {len(paths)} profiles")
    for title, counter, top in (("self", own, 30), ("inclusive", inclusive, 50)):
        print(f"\n== {title}")
        for frame, n in counter.most_common(top):
            print(f"{100 * n / total:5.1f}%  {frame[:140]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
