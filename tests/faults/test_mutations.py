"""
The fault suite can fail: deliberately broken servers (L{tests.faults.mutations},
patched in by the launcher, never in production code) are caught by short
runs of the relevant faults.  Without this, a green run proves nothing
about the checker.  A follower serving after its read lease is caught by
the scripted partition of L{tests.faults.test_lease_cutoff}: the seeded
pauses and partitions hit its window in only some runs.
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
