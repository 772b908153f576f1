"""
Tests for the rule that decides which appends the event loop writes itself.
"""

from twisted.trial.unittest import TestCase

from minkms.raft.types import Entry, HardState, Snapshot, SnapshotMeta
from minkms.storage.inline import InlineAppends

SMALL = [Entry(1, 1, 0, b"x" * 300), HardState(1, 0, 1)]


class InlineAppendsTests(TestCase):
    def learned(self, *seconds: float, window: int = 4) -> InlineAppends:
        """A rule with a window of C{window} that has seen appends take C{seconds}."""
        rule = InlineAppends(max_seconds=0.002, window=window)
        for took in seconds:
            rule.took(took)
        return rule

    def test_thread_until_the_disk_is_known(self):
        """Until a full window of appends was timed, every batch goes to the thread."""
        rule = self.learned(0.0001, 0.0001, 0.0001)
        self.assertFalse(rule.allows(SMALL))
        rule.took(0.0001)
        self.assertTrue(rule.allows(SMALL))

    def test_fast_disk_small_batch(self):
        """Entries and hard states up to the size limit are written on the loop."""
        rule = self.learned(0.0004, 0.0005, 0.0003, 0.0004)
        self.assertTrue(rule.allows(SMALL))
        self.assertTrue(rule.allows([Entry(2, 1, 0, b"y" * rule.max_bytes)]))
        self.assertFalse(rule.allows([Entry(2, 1, 0, b"y" * rule.max_bytes), Entry(3, 1, 0, b"z")]))

    def test_snapshot_goes_to_the_thread(self):
        """A snapshot is never written on the loop, however small."""
        rule = self.learned(0.0001, 0.0001, 0.0001, 0.0001)
        snapshot = Snapshot(SnapshotMeta(5, 1, b"cfg"), b"state")
        self.assertFalse(rule.allows([snapshot]))
        self.assertFalse(rule.allows([snapshot, Entry(6, 1, 0, b"x")]))

    def test_slow_disk_and_recovery(self):
        """Half the window slow sends batches to the thread; fast appends bring them back."""
        rule = self.learned(0.0001, 0.003, 0.0001, 0.0001)
        self.assertTrue(rule.allows(SMALL), "one slow fsync of four is an outlier")
        rule.took(0.005)
        self.assertFalse(rule.allows(SMALL), "two of four slow")
        rule.took(0.0001)
        self.assertTrue(rule.allows(SMALL), "0.003 left the window")
        rule.took(0.004)
        rule.took(0.004)
        self.assertFalse(rule.allows(SMALL), "a disk that turned slow")

    def test_leader_writes_on_the_thread(self):
        """A leader's appends go to the thread however fast the disk: its event loop must not wait for it."""
        rule = self.learned(0.0001, 0.0001, 0.0001, 0.0001)
        rule.leading = True
        self.assertFalse(rule.allows(SMALL))
        rule.leading = False
        self.assertTrue(rule.allows(SMALL))
