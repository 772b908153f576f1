"""
The quick seed sweep: 500 seeded simulations of whole clusters of 1 to 7
nodes under crashes, partitions, pauses, message loss and membership
changes, each checked for safety and liveness.  Even seeds run the
register store, odd seeds the real KMS state machine; some runs play the
figure-8 schedule (L{minkms.sim.figure8}).  The long sweep is
C{bench/sim_sweep.py}; a failure names the command that replays it.
"""

from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from minkms.sim.__main__ import nodes_for
from minkms.sim.machines import machine_for
from minkms.sim.simulation import SimSettings, Simulation

SEEDS = 500
CHUNK = 50
FAULT_MS = 2000


def _sweep(first: int) -> Counter:
    totals: Counter = Counter()
    for seed in range(first, first + CHUNK):
        settings = SimSettings(seed, nodes_for(seed), fault_ms=FAULT_MS, machine=machine_for(seed))
        result = Simulation(settings).run()
        totals.update(result.stats)
    return totals


class QuickSweepTests(SynchronousTestCase):
    """Seeds 0..499 in chunks, so that trial -j can spread them."""

    def _check_chunk(self, first: int) -> None:
        totals = _sweep(first)
        for exercised in (
            "write_ok",
            "read_ok",
            "crashes",
            "partitions",
            "added",
            "removed",
            "transfers",
            "figure8",
        ):
            self.assertGreater(totals[exercised], 0, exercised)


class Figure8CoverageTests(SynchronousTestCase):
    """The figure-8 schedule reaches the case Raft's commit rule guards."""

    def test_old_term_entry_overwritten(self):
        """
        Sweeping from seed 0, runs of the figure-8 schedule overwrite an old
        term's uncommitted entry (three times before seed 500).  Counted over
        the sweep, not per chunk: a chunk of 50 seeds sees it 0 to 8 times.
        """
        overwrites = 0
        for seed in range(SEEDS):
            settings = SimSettings(seed, nodes_for(seed), fault_ms=FAULT_MS, machine=machine_for(seed))
            overwrites += Simulation(settings).run().stats["figure8_overwrite"]
            if overwrites >= 3:
                return
        self.fail(f"the figure-8 schedule overwrote an old term's entry {overwrites} times in {SEEDS} seeds")


def _make_test(first: int):
    def test(self):
        self._check_chunk(first)

    test.__doc__ = f"Seeds {first}..{first + CHUNK - 1} keep every safety and liveness property."
    return test


for _first in range(0, SEEDS, CHUNK):
    setattr(QuickSweepTests, f"test_seeds_{_first:03d}", _make_test(_first))
del _first
