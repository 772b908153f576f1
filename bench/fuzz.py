"""
The long fuzzing run: tests/test_fuzz.py under the C{minkms-long}
hypothesis profile (random seeds, many examples per property).

    .venv/bin/python bench/fuzz.py [--examples 20000] [-j 2] [TEST ...]

TEST names a class or method of tests.test_fuzz (default: all).  Prints
trial's report and the elapsed time; exits non-zero when a property
fails, with hypothesis's smallest failing example in the report.
"""

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--examples", type=int, default=20_000, help="examples per property")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="trial worker processes")
    parser.add_argument("tests", nargs="*", help="e.g. VolumeFuzzTests.test_damaged_volume")
    args = parser.parse_args()
    env = dict(os.environ, HYPOTHESIS_PROFILE="minkms-long", MINKMS_FUZZ_EXAMPLES=str(args.examples))
    names = [f"tests.test_fuzz.{t}" for t in args.tests] or ["tests.test_fuzz"]
    command = [sys.executable, "-m", "twisted.trial"]
    if args.jobs > 1:
        command.append(f"-j{args.jobs}")
    started = time.monotonic()
    status = subprocess.call(command + names, cwd=REPO, env=env)
    print(f"{args.examples} examples per property, {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
