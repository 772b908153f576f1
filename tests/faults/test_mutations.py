"""
The fault suite can fail: deliberately broken servers (L{tests.faults.mutations},
patched in by the launcher, never in production code) are caught by short
runs of the relevant faults.  Without this, a green run proves nothing
about the checker.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.faults import checker
from tests.faults.run import RunSettings, run

DATA_LOSS = (
    checker.LOST_WRITE,
    checker.NOT_LINEARIZABLE,
    checker.DISAGREE,
    checker.NODE_EXITED,
    checker.FINAL_READ,
    checker.PHANTOM,
)


class MutationTests(unittest.TestCase):
    timeout = 400

    async def _mutant_run(self, mutant, kinds, rounds):
        settings = RunSettings(seed=3, seconds=120, kinds=kinds, rounds=rounds, mutant=mutant)
        report = await run(self.mktemp(), settings)
        print("\n" + "\n".join(report.lines()))
        return report.findings.counts()

    async def _ack_before_fsync(self):
        counts = await self._mutant_run("ack_before_fsync", ("crash_all",), 2)
        self.assertTrue(set(counts) & set(DATA_LOSS), f"acknowledging before fsync went unnoticed: {counts}")

    def test_ack_before_fsync_is_caught(self):
        """Acknowledged writes that were never fsynced are lost when every node crashes."""
        return defer.ensureDeferred(self._ack_before_fsync())

    async def _timeout_500(self):
        counts = await self._mutant_run("timeout_500", ("quorum_loss",), 2)
        self.assertIn(checker.ANSWERED_500, counts, f"a write timeout answered 500 unnoticed: {counts}")

    def test_write_timeout_answering_500_is_caught(self):
        """Writes waiting on a leader cut off from its quorum time out: 503, never 500."""
        return defer.ensureDeferred(self._timeout_500())

    async def _serves_after_lease(self):
        counts = await self._mutant_run("serves_after_lease", ("pause", "partition_link"), 4)
        self.assertTrue(
            {checker.STALE_READ, checker.STALE_OR_WORSE} & set(counts),
            f"a follower serving after its lease went unnoticed: {counts}",
        )

    def test_serving_after_lease_is_caught(self):
        """A follower paused or cut off past its lease, still serving, answers stale reads."""
        return defer.ensureDeferred(self._serves_after_lease())

    test_serving_after_lease_is_caught.skip = (  # type: ignore[attr-defined]
        "flaky on real processes since the write-path change (caught in 3 of 5 runs here): the simulator's "
        "LeaseMutationTests catch this mutant deterministically; a deterministic real-process test is issue 10's "
        "open item"
    )
