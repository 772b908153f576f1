"""
Every benchmark once, one after the other, with its default settings
(C{make bench}); C{--quick} runs each for a second or two instead, to see
that none has rotted.  Figures only: nothing here fails a build but a
benchmark that cannot run at all.

    .venv/bin/python bench/run_all.py [--quick]
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

BENCHMARKS = [
    ("storage_append.py", [], ["--seconds", "0.5", "--state-mib", "2"]),
    ("policy_match.py", [], ["--repeat", "20"]),
    ("read_path.py", [], ["--seconds", "1", "--warmup", "0.5", "--clients", "2", "--rounds", "1"]),
    ("write_path.py", [], ["--seconds", "0.5"]),
    ("peer_messages.py", [], ["--seconds", "0.2"]),
    ("scale.py", [], ["--keys", "30", "--enclaves", "3", "--baseline-keys", "10", "--decrypts", "10"]),
    ("sim_sweep.py", ["--seeds", "2000", "--jobs", "2", "--machine", "both"], ["--seeds", "4"]),
]
"""(script, arguments of a full run, arguments of a quick run)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a second or two each")
    args = parser.parse_args()
    failed = []
    for script, full, quick in BENCHMARKS:
        print(f"== {script}", flush=True)
        code = subprocess.call([sys.executable, os.path.join(HERE, script), *(quick if args.quick else full)])
        if code:
            failed.append(script)
    if failed:
        print(f"benchmarks that did not run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
