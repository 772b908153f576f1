"""
The long simulation sweep: many seeds of whole-cluster simulations.

    python bench/sim_sweep.py --seeds 20000 --jobs 2 [--machine register|kms|both]

Cluster sizes cycle through 1..7 nodes (seed % 7 + 1); the state machine is
the register store, the real KMS one, or (both) each in turn by seed.  Prints throughput
(seeds per second and simulated seconds per wall-clock second), what the
runs exercised, and for every failing seed the command that replays it.
Exits with status 1 if any seed failed.
"""

import argparse
import multiprocessing
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from minkms.sim.__main__ import nodes_for  # noqa: E402
from minkms.sim.machines import MACHINES, machine_for  # noqa: E402
from minkms.sim.simulation import SimSettings, Simulation, SimulationFailure  # noqa: E402


def run_seed(job: tuple[int, int, str]) -> tuple[int, int, dict, int, str | None]:
    """Run one seed; return (seed, virtual ms, stats, convergence ms, failure text or None)."""
    seed, fault_ms, machine = job
    if machine == "both":
        machine = machine_for(seed)
    settings = SimSettings(seed, nodes_for(seed), fault_ms=fault_ms, machine=machine)
    try:
        result = Simulation(settings).run()
    except SimulationFailure as failure:
        return seed, 0, {}, 0, str(failure)
    return seed, result.virtual_ms, result.stats, result.converged_after_ms, None


def main() -> int:
    """Run the sweep and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--fault-ms", type=int, default=SimSettings(0).fault_ms)
    parser.add_argument("--machine", choices=(*MACHINES, "both"), default="register")
    args = parser.parse_args()

    jobs = [(seed, args.fault_ms, args.machine) for seed in range(args.start, args.start + args.seeds)]
    totals: Counter = Counter()
    failures: list[str] = []
    virtual_ms = 0
    slowest_convergence = slowest_seed = 0
    largest_message = 0
    done = 0
    started = time.perf_counter()
    if args.jobs > 1:
        pool = multiprocessing.Pool(args.jobs)
        results = pool.imap_unordered(run_seed, jobs, chunksize=8)
    else:
        pool = None
        results = map(run_seed, jobs)
    for seed, ms, stats, converged, failure in results:
        done += 1
        if failure is not None:
            failures.append(failure)
            print(failure, file=sys.stderr, flush=True)
        virtual_ms += ms
        largest_message = max(largest_message, stats.pop("largest_message", 0))
        totals.update(stats)
        if converged > slowest_convergence:
            slowest_convergence, slowest_seed = converged, seed
        if done % 500 == 0:
            elapsed = time.perf_counter() - started
            print(
                f"{done}/{args.seeds} seeds, {done / elapsed:.1f} seeds/s, {len(failures)} failed",
                flush=True,
            )
    if pool is not None:
        pool.close()
        pool.join()
    elapsed = time.perf_counter() - started

    print(
        f"seeds: {args.seeds} ({args.start}..{args.start + args.seeds - 1}), "
        f"machine: {args.machine}, failed: {len(failures)}"
    )
    print(f"wall time: {elapsed:.1f} s with {args.jobs} process(es)")
    print(f"throughput: {args.seeds / elapsed:.1f} seeds/s, {virtual_ms / 1000 / elapsed:.1f} simulated s per wall s")
    print(
        f"simulated time: {virtual_ms / 1000:.0f} s; slowest convergence after faults: "
        f"{slowest_convergence} ms (seed {slowest_seed})"
    )
    print(f"largest encoded message: {largest_message} bytes")
    print("exercised: " + ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
