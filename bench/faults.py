"""
The long fault run: a real cluster under the seeded nemesis and the
workload of tests/faults, checked at the end.

    .venv/bin/python bench/faults.py --minutes 30 --seed 1 --nodes 3

Prints operations by outcome, faults by kind, writes acknowledged per
fault phase, anomalies by class and the seed; exits 1 if any anomaly
other than a stale read was found (stale reads count too with
--fresh-reads, once follower read leases land: issue 8).
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from tests.faults import checker  # noqa: E402
from tests.faults.nemesis import KINDS, Settings  # noqa: E402
from tests.faults.run import RunSettings, run  # noqa: E402


def main(reactor, argv):
    """Parse the options, run once, print the report."""
    parser = argparse.ArgumentParser(prog="bench/faults.py")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--pause",
        type=float,
        default=Settings().pause,
        help="seconds a SIGSTOP lasts (longer than the election timeout and a read lease)",
    )
    parser.add_argument("--kinds", default=",".join(KINDS), help="fault kinds, comma-separated")
    parser.add_argument("--fresh-reads", action="store_true", help="count stale reads as anomalies")
    options = parser.parse_args(argv)
    settings = RunSettings(
        options.seed,
        options.minutes * 60,
        options.nodes,
        options.clients,
        tuple(options.kinds.split(",")),
        nemesis=Settings(pause=options.pause),
    )
    base = tempfile.mkdtemp(prefix="minkms-faults-")

    async def go():
        report = await run(base, settings, progress=print)
        for line in report.lines():
            print(line)
        ignored = () if options.fresh_reads else (checker.STALE_READ,)
        if report.findings.total(ignored):
            raise SystemExit(1)

    return defer.ensureDeferred(go())


if __name__ == "__main__":
    task.react(main, [sys.argv[1:]])
