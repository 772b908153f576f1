"""
The simulator's checks can fail: a Raft core with a known safety bug is
caught by seeds of the normal sweep.  Without this, a sweep that passes
proves nothing about the checker.
"""

from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from minkms.raft import core, lease, quorum
from minkms.raft.ready import LEADER
from minkms.sim.__main__ import nodes_for
from minkms.sim.machines import machine_for
from minkms.sim.simulation import SimSettings, Simulation, SimulationFailure

FIRST_SEEDS = range(0, 60)
"""Seeds 0..59 of the quick sweep; several play the figure-8 schedule."""

_original_maybe_commit = core.RaftCore._maybe_commit


def _commits_old_terms(self) -> None:
    """
    The figure-8 bug (Raft section 5.4.2): commit an entry of an older term
    by counting its replicas, as if it were of the leader's own term.
    """
    index = quorum.committed_index(self.config.voters, self._match_of)
    term = self.log.term(index)
    current = self.term
    if term is not None:
        self.term = term
    try:
        _original_maybe_commit(self)
    finally:
        self.term = current


def _failing_seeds() -> list[int]:
    failed = []
    for seed in FIRST_SEEDS:
        settings = SimSettings(seed, nodes_for(seed), fault_ms=2000, machine=machine_for(seed))
        try:
            Simulation(settings).run()
        except SimulationFailure:
            failed.append(seed)
    return failed


class MutationTests(SynchronousTestCase):
    def test_commit_rule_break_is_caught(self):
        """A leader that commits older-term entries by count fails some seeds."""
        with mock.patch.object(core.RaftCore, "_maybe_commit", _commits_old_terms):
            failed = _failing_seeds()
        self.assertNotEqual(failed, [], "the sweep did not notice a broken commit rule")


def _acknowledges_when_committed(self, now: float, committed: int, match_of) -> int:
    """Acknowledge (apply) a write once committed, whether lease holders have it or not."""
    return committed


_original_lease_read_index = core.RaftCore.lease_read_index


def _follower_reads_to_its_commit(self):
    """A follower under a lease waits only for what it knows to be committed, not for its whole log."""
    index = _original_lease_read_index(self)
    if index is None or self.role == LEADER:
        return index
    return max(self._follower_lease.index, self.log.committed)


def _ignores_lease_expiry(self, now: float):
    """A follower that serves from its lease after it expired, skipping ReadIndex."""
    return self.index if self.expiry > lease.NEVER else None


_original_grant = lease.LeaderLeases.grant


def _drops_holders_early(self, node: int, now: float):
    """The leader forgets a holder as soon as it granted, long before the lease ends."""
    grant = _original_grant(self, node, now)
    holder = self._members.get(node)
    if holder is not None:
        holder.until = now
    return grant


class LeaseMutationTests(SynchronousTestCase):
    """
    Each half of the read-lease rule is needed: break one and the quick
    sweep's freshness and linearizability checks fail some seeds.
    """

    def test_ack_before_holders_persist_is_caught(self):
        with mock.patch.object(lease.LeaderLeases, "acknowledgeable", _acknowledges_when_committed):
            self.assertNotEqual(_failing_seeds(), [], "acknowledging before lease holders had the write")

    def test_follower_reading_to_its_commit_is_caught(self):
        with mock.patch.object(core.RaftCore, "lease_read_index", _follower_reads_to_its_commit):
            self.assertNotEqual(_failing_seeds(), [], "a follower reading only what it knew committed")

    def test_serving_after_expiry_is_caught(self):
        with mock.patch.object(lease.FollowerLease, "read_index", _ignores_lease_expiry):
            self.assertNotEqual(_failing_seeds(), [], "a follower serving past its lease")

    def test_dropping_holders_early_is_caught(self):
        with mock.patch.object(lease.LeaderLeases, "grant", _drops_holders_early):
            self.assertNotEqual(_failing_seeds(), [], "a leader dropping holders before expiry")
