"""
Read leases (L{minkms.raft.lease}): the pure bookkeeping on each side, and
the rule as the core applies it in a small in-memory cluster whose clock
the test moves.
"""

from twisted.trial.unittest import SynchronousTestCase

from minkms.raft.core import RaftOptions
from minkms.raft.lease import FollowerLease, LeaderLeases
from minkms.raft.messages import Append, AppendResponse
from minkms.raft.types import ENTRY_NORMAL
from minkms.sim.harness import MemoryCluster

LEASE = 1.0


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FollowerLeaseTests(SynchronousTestCase):
    def test_lease_counts_from_the_request(self):
        """A granted lease ends C{duration} after the follower asked, not after the grant arrived."""
        lease = FollowerLease(LEASE)
        seq = lease.ask(10.0)
        lease.granted(seq, index=7, micros=5_000_000)
        self.assertEqual(lease.read_index(10.5), 7)
        self.assertEqual(lease.read_index(10.99), 7)
        self.assertIsNone(lease.read_index(11.0))

    def test_shorter_grant_wins(self):
        """The leader may grant less than C{duration} (what is left of its own lease)."""
        lease = FollowerLease(LEASE)
        lease.granted(lease.ask(10.0), index=1, micros=200_000)
        self.assertEqual(lease.read_index(10.1), 1)
        self.assertIsNone(lease.read_index(10.2))

    def test_unknown_request_grants_nothing(self):
        """A grant for a request this follower never made (or forgot) is ignored."""
        lease = FollowerLease(LEASE)
        lease.granted(42, index=1, micros=1_000_000)
        self.assertIsNone(lease.read_index(0.0))


class LeaderLeasesTests(SynchronousTestCase):
    def leases(self, inherits=False):
        return LeaderLeases(1, LEASE, 0.01, now=50.0, inherits_leases=inherits)

    def test_own_lease_needs_a_majority_round(self):
        """The leader's lease starts when a round a majority answered was sent."""
        leases = self.leases()
        leases.round_sent(1, 50.0, {1, 2, 3})
        self.assertFalse(leases.serves_reads(50.1))
        leases.round_answered(2, 1, {1, 2, 3})
        self.assertTrue(leases.serves_reads(50.9))
        self.assertFalse(leases.serves_reads(51.0))

    def test_no_grant_without_own_lease(self):
        """A leader whose own lease lapsed grants nothing."""
        leases = self.leases()
        leases.requested(2, 5)
        self.assertEqual(leases.grant(2, 50.0), (0, 0))

    def test_holder_is_kept_past_its_lease(self):
        """The leader counts a holder until after the lease it granted can have ended."""
        leases = self.leases()
        leases.round_sent(1, 50.0, {1, 2, 3})
        leases.round_answered(2, 1, {1, 2, 3})
        leases.requested(3, 9)
        seq, micros = leases.grant(3, 50.2)
        self.assertEqual(seq, 9)
        self.assertIn(micros, (799_999, 800_000))
        self.assertEqual(leases.holders(51.0), [3])
        self.assertEqual(leases.holders(51.02), [])

    def test_acknowledge_only_what_holders_have_on_disk(self):
        """
        Writes are acknowledgeable up to the smallest match index of a
        holder; a member without a lease does not hold them back.
        """
        leases = self.leases()
        leases.round_sent(1, 50.0, {1, 2, 3})
        leases.round_answered(2, 1, {1, 2, 3})
        leases.requested(3, 1)
        leases.grant(3, 50.1)
        match = {2: 1, 3: 4}.__getitem__
        self.assertEqual(leases.acknowledgeable(50.2, 9, match), 4)
        self.assertEqual(leases.acknowledgeable(50.2, 3, match), 3)
        self.assertEqual(leases.acknowledgeable(52.0, 9, match), 9)

    def test_new_leader_waits_out_old_leases(self):
        """A leader that may inherit leases acknowledges nothing for a lease period."""
        leases = self.leases(inherits=True)
        match = {2: 9, 3: 9}.__getitem__
        self.assertEqual(leases.acknowledgeable(50.9, 9, match), 0)
        self.assertEqual(leases.acknowledgeable(51.1, 9, match), 9)


def leased_cluster(clock):
    options = RaftOptions(election_ticks=10, read_lease=LEASE)
    cluster = MemoryCluster([1, 2, 3], options, clock=clock)
    cluster.elect(1)
    return cluster


def heartbeat_rounds(cluster, clock, rounds=3, step=0.1):
    for _ in range(rounds):
        clock.now += step
        cluster.tick(1)
        cluster.stabilize()


def normal_applied(cluster, node):
    return [e.index for e in cluster.applied[node] if e.kind == ENTRY_NORMAL]


class CoreLeaseTests(SynchronousTestCase):
    """The rule end to end in the core."""

    def setUp(self):
        self.clock = Clock()
        self.cluster = leased_cluster(self.clock)
        self.clock.now += 2 * LEASE
        heartbeat_rounds(self.cluster, self.clock)

    def test_followers_hold_leases(self):
        """After a few heartbeats every follower may read from its own state."""
        for node in (2, 3):
            self.assertIsNotNone(self.cluster.cores[node].lease_read_index())
        self.assertEqual(self.cluster.cores[1].lease_holders(), [2, 3])
        self.assertIsNotNone(self.cluster.cores[1].lease_read_index())

    def test_lease_lapses_without_heartbeats(self):
        """A follower that stops hearing from the leader loses its lease within C{read_lease}."""
        self.cluster.isolate(2)
        heartbeat_rounds(self.cluster, self.clock, rounds=11)
        self.assertIsNone(self.cluster.cores[2].lease_read_index())
        self.assertIsNotNone(self.cluster.cores[3].lease_read_index())

    def test_write_waits_for_a_cut_off_holder(self):
        """
        A committed write is not applied (so not acknowledged) on the leader
        while a cut-off follower may still read under its lease; it is once
        that lease has surely expired.
        """
        cluster, leader = self.cluster, self.cluster.cores[1]
        cluster.isolate(3)
        index = leader.propose(b"w")
        cluster.stabilize()
        self.assertGreaterEqual(leader.log.committed, index)
        self.assertNotIn(index, normal_applied(cluster, 1))
        self.assertNotIn(index, normal_applied(cluster, 2))
        heartbeat_rounds(cluster, self.clock, rounds=11)
        self.assertIn(index, normal_applied(cluster, 1))
        self.assertIn(index, normal_applied(cluster, 2))
        self.assertEqual(leader.lease_holders(), [2])

    def test_write_applied_everywhere(self):
        """With every holder reachable a write is applied on every node."""
        cluster, leader = self.cluster, self.cluster.cores[1]
        index = leader.propose(b"w")
        cluster.stabilize()
        for node in (1, 2, 3):
            self.assertIn(index, normal_applied(cluster, node))

    def test_write_costs_each_follower_two_appends_and_one_answer(self):
        """
        Per follower a write takes its entries (answered once on disk) and a
        notice of the new commit and acknowledgement frontier (not
        answered: nobody waits on it).
        """
        cluster, leader = self.cluster, self.cluster.cores[1]
        sent: list = []
        index = leader.propose(b"w")
        cluster.stabilize(drop=lambda m: sent.append(m) or False)
        self.assertIn(index, normal_applied(cluster, 2))
        for node in (2, 3):
            appends = [m for m in sent if isinstance(m, Append) and m.dst == node]
            answers = [m for m in sent if isinstance(m, AppendResponse) and m.src == node]
            self.assertEqual([(bool(m.entries), m.notice) for m in appends], [(True, False), (False, True)])
            self.assertEqual((appends[1].commit, appends[1].acked), (index, index))
            self.assertEqual([m.index for m in answers], [index])

    def test_leader_applies_a_write_after_one_round_trip(self):
        """
        The leader applies (so acknowledges) a write once every holder
        answered that it has it on disk, before any follower knows it is
        committed; a read arriving on a follower then waits for it.
        """
        cluster, leader = self.cluster, self.cluster.cores[1]
        index = leader.propose(b"w")
        cluster.stabilize(drop=lambda m: isinstance(m, Append) and m.notice)
        self.assertIn(index, normal_applied(cluster, 1))
        for node in (2, 3):
            follower = cluster.cores[node]
            self.assertNotIn(index, normal_applied(cluster, node))
            self.assertLess(follower.log.committed, index)
            self.assertEqual(follower.lease_read_index(), index)

    def test_followers_learn_the_frontier_while_the_leader_persists(self):
        """
        While the leader's own write of an entry is still under way (a slow
        disk), the holders' answers move what may be applied, and the
        messages the leader sends meanwhile tell the followers: their
        reads do not wait for the leader's disk.
        """
        leader = self.cluster.cores[1]
        index = leader.propose(b"w")
        ready = leader.ready()
        for append in [m for m in ready.send_first if isinstance(m, Append) and m.entries]:
            follower = self.cluster.cores[append.dst]
            follower.step(append)
            persisted = follower.ready()
            follower.advance(persisted)
            for answer in persisted.messages:
                leader.step(answer)
        notices = [m for m in leader.early_messages() if isinstance(m, Append)]
        self.assertEqual(sorted(m.dst for m in notices), [2, 3])
        self.assertEqual({(m.commit, m.acked) for m in notices}, {(index, index)})
        leader.advance(ready)

    def test_write_waits_for_a_holder_to_persist(self):
        """While one holder has not answered for the entry, the leader applies nothing of it."""
        cluster, leader = self.cluster, self.cluster.cores[1]
        index = leader.propose(b"w")
        cluster.stabilize(drop=lambda m: isinstance(m, AppendResponse) and m.src == 3)
        self.assertGreaterEqual(leader.log.committed, index)
        self.assertNotIn(index, normal_applied(cluster, 1))
        self.assertNotIn(index, normal_applied(cluster, 2))

    def test_new_writes_are_checked_against_what_was_shown(self):
        """
        A leader checks a new write once it applied what any client may
        have seen acknowledged: not a committed entry a holder has yet to
        persist, but all of a predecessor's entries (here after a transfer,
        until the old leases ran out).
        """
        cluster, leader = self.cluster, self.cluster.cores[1]
        before = leader.log.applied
        index = leader.propose(b"w")
        cluster.stabilize(drop=lambda m: isinstance(m, AppendResponse) and m.src == 3)
        self.assertGreaterEqual(leader.log.committed, index)
        self.assertEqual(leader.seen_index(), before)
        leader.transfer_leadership(2)
        cluster.stabilize()
        new = cluster.cores[2]
        self.assertEqual(cluster.leaders(), [2])
        self.assertGreaterEqual(new.seen_index(), index)
        self.assertLess(new.log.applied, index)

    def test_follower_without_what_its_lease_covers_reads_by_read_index(self):
        """
        A follower whose log does not yet reach the index its lease was
        granted at has no lease read (the driver then asks the leader).
        """
        follower = self.cluster.cores[2]
        self.assertEqual(follower.lease_read_index(), follower.log.last_index())
        follower._follower_lease.index = follower.log.last_index() + 1
        self.assertIsNone(follower.lease_read_index())

    def test_follower_with_an_older_terms_entries_reads_by_read_index(self):
        """
        A follower whose log holds entries of an older term where the
        leader's has others has no lease read until the leader's Appends
        replaced them, even when a grant reached it and its log is longer
        than the grant's index: its log end may fall below that index once
        they are replaced (a stale read the simulator found, seed 19508).
        """
        cluster, clock = self.cluster, self.clock
        cluster.isolate(1)
        for _ in range(5):
            cluster.cores[1].propose(b"lost")
        cluster.stabilize()
        for _ in range(30):
            clock.now += 0.1
            cluster.tick(2)
            cluster.tick(3)
            cluster.stabilize()
        (leader,) = [node for node in cluster.leaders() if node != 1]
        new = cluster.cores[leader]
        clock.now += 2 * LEASE
        written = new.propose(b"w")
        for _ in range(2):
            clock.now += 0.1
            cluster.tick(leader)
            cluster.stabilize()
        old = cluster.cores[1]
        self.assertGreater(old.log.last_index(), written)
        cluster.heal()
        to_old = lambda m: isinstance(m, Append) and m.dst == 1  # noqa: E731
        for _ in range(3):
            clock.now += 0.1
            cluster.tick(leader)
            cluster.stabilize(drop=to_old)
        self.assertEqual(old.leader, leader)
        self.assertIsNotNone(old._follower_lease.read_index(clock.now))
        self.assertGreaterEqual(old.log.last_index(), old._follower_lease.index)
        self.assertIsNone(old.lease_read_index())
        for _ in range(2):
            clock.now += 0.1
            cluster.tick(leader)
            cluster.stabilize()
        self.assertEqual(old.lease_read_index(), old.log.last_index())
        self.assertEqual(old.log.term(written), new.term)

    def test_follower_answers_probes_not_notices(self):
        """
        A follower answers an empty Append that is not a notice (a probe),
        and never a notice, even one that moves its commit index.
        """
        cluster, leader, follower = self.cluster, self.cluster.cores[1], self.cluster.cores[2]

        def answers(**fields) -> list:
            last = follower.log.last_index()
            follower.step(
                Append(
                    1,
                    2,
                    leader.term,
                    prev_index=last,
                    prev_term=follower.log.term(last),
                    acked=leader.log.committed,
                    **fields,
                )
            )
            cluster.process(2)
            return cluster.take(lambda m: isinstance(m, AppendResponse) and m.src == 2)

        committed = follower.log.committed
        self.assertEqual(len(answers(commit=committed)), 1)
        self.assertEqual(answers(commit=committed, notice=True), [])
        index = leader.propose(b"w")
        cluster.process(1)
        cluster.deliver(lambda m: not (isinstance(m, Append) and m.dst == 2 and m.entries))
        cluster.process(2)
        cluster.outbox.clear()
        self.assertLess(follower.log.committed, index)
        self.assertEqual(answers(commit=index, notice=True), [])
        self.assertEqual(follower.log.committed, index)

    def test_new_leader_waits_for_old_leases(self):
        """A new leader (here by transfer) applies nothing of its term until the old leases ran out."""
        cluster = self.cluster
        cluster.cores[1].transfer_leadership(2)
        cluster.stabilize()
        new = cluster.cores[2]
        self.assertEqual(cluster.leaders(), [2])
        index = new.propose(b"w")
        cluster.stabilize()
        self.assertGreaterEqual(new.log.committed, index)
        self.assertNotIn(index, normal_applied(cluster, 2))
        self.clock.now += LEASE * 1.05
        new.tick()
        cluster.stabilize()
        self.assertIn(index, normal_applied(cluster, 2))


class ReadLeaseViewTests(SynchronousTestCase):
    def test_leases_shown_with_time_left(self):
        """The leader shows its own lease and each holder's; a follower its own."""
        clock = Clock()
        cluster = leased_cluster(clock)
        clock.now += 2 * LEASE
        heartbeat_rounds(cluster, clock)
        shown = cluster.cores[1].read_leases()
        self.assertEqual(sorted(shown), [1, 2, 3])
        self.assertTrue(all(0 < left <= LEASE * 1.02 for left in shown.values()), shown)
        self.assertEqual(sorted(cluster.cores[2].read_leases()), [2])
