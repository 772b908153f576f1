"""
What one policy decision costs at the limits a policy may reach.

    .venv/bin/python bench/policy_match.py [--repeat 2000]

Prints microseconds per decision for: the report's pattern (issue 11) with
the most stars allowed, against the longest valid name and against the
longest argument matched at all; and a policy of the most patterns allowed,
all general globs, which is the worst a listing pays per name.  Prints
figures; never fails.
"""

import argparse
import os
import platform
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minkms.names import MAX_NAME  # noqa: E402
from minkms.state import policy as p  # noqa: E402
from minkms.state.model import Policy  # noqa: E402


def per_call(function, repeat: int) -> float:
    """Best of three runs, microseconds per call."""
    return min(timeit.repeat(function, number=repeat, repeat=3)) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, load {os.getloadavg()[0]:.2f}")
    worst = "*a" * p.MAX_STARS + "b"
    cases = [
        (f"{worst!r} vs {MAX_NAME} chars", worst, "a" * MAX_NAME),
        (f"{worst!r} vs {p.MAX_MATCHED_NAME} chars", worst, "a" * p.MAX_MATCHED_NAME),
    ]
    for label, pattern, name in cases:
        micros = per_call(lambda pattern=pattern, name=name: p.matches(pattern, name), args.repeat)
        print(f"one pattern     {label:<60} {micros:9.1f} us")
    globs = tuple("*a" * (p.MAX_STARS - 1) + f"*b{i:03d}*c" for i in range(p.MAX_PATTERNS - 1))
    record = Policy("big", {"KEY:ENCRYPT": ("*",)}, {"KEY:ENCRYPT": globs}, 0, "")
    name = "a" * (MAX_NAME - 1) + "c"
    micros = per_call(lambda: record.matcher.decide("KEY:ENCRYPT", name), max(1, args.repeat // 50))
    print(
        f"whole policy    {p.MAX_PATTERNS} patterns of {p.MAX_STARS} stars vs {MAX_NAME} chars{'':<17} {micros:9.1f} us"
    )
    print(f"a LIST page of 1000 names under that policy: about {micros:.0f} ms")


if __name__ == "__main__":
    main()
