"""
Run or replay simulations: C{python -m minkms.sim --seed 1234 --nodes 5}.

With C{--seeds N} it runs seeds C{seed .. seed+N-1}, cycling the cluster
size through 1..7 unless C{--nodes} is given, and stops at the first
failure, printing the command that replays it.  C{--machine kms} runs the
real KMS state machine instead of the register store; C{both} alternates
by seed.
"""

import argparse
import sys
import time

from minkms.sim.machines import MACHINES, machine_for
from minkms.sim.simulation import SimSettings, Simulation, SimulationFailure


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minkms.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=None, help="founding voters, 1..7")
    parser.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds")
    parser.add_argument("--fault-ms", type=int, default=SimSettings(0).fault_ms)
    parser.add_argument("--liveness-ms", type=int, default=SimSettings(0).liveness_ms)
    parser.add_argument("--machine", choices=(*MACHINES, "both"), default="register", help="state machine")
    parser.add_argument("--verbose", action="store_true", help="print every run's statistics")
    return parser.parse_args(argv)


def nodes_for(seed: int) -> int:
    """The cluster size a sweep uses for C{seed}: 1..7 in turn."""
    return seed % 7 + 1


def main(argv: list[str] | None = None) -> int:
    """Run the requested seeds; exit status 1 on the first failure."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    for seed in range(args.seed, args.seed + args.seeds):
        nodes = args.nodes if args.nodes is not None else nodes_for(seed)
        machine = machine_for(seed) if args.machine == "both" else args.machine
        settings = SimSettings(seed, nodes, args.fault_ms, args.liveness_ms, machine)
        try:
            result = Simulation(settings).run()
        except SimulationFailure as failure:
            print(failure, file=sys.stderr)
            return 1
        if args.verbose or args.seeds == 1:
            print(
                f"seed {seed} nodes {nodes} {machine}: ok, converged "
                f"{result.converged_after_ms} ms after faults stopped, "
                f"{result.messages} messages, {result.stats}"
            )
    elapsed = time.perf_counter() - started
    print(f"{args.seeds} seeds passed in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
