"""
Unit tests of the pure Raft core, in the style of etcd-io/raft's paper
tests: each drives a small in-memory cluster (or a single core with
hand-made messages) into one situation of the Raft paper and checks the rule
that applies there.
"""

import random

import attrs
from twisted.trial.unittest import SynchronousTestCase

from minkms.raft import codec
from minkms.raft.config import ConfigChange
from minkms.raft.core import RaftCore, RaftOptions, bootstrap_state
from minkms.raft.errors import ConfigChangeRejected, InvariantViolation, NotLeader, ProposalDropped
from minkms.raft.messages import (
    Append,
    AppendResponse,
    Heartbeat,
    InstallSnapshot,
    SnapshotResponse,
    VoteRequest,
    VoteResponse,
)
from minkms.raft.ready import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE
from minkms.raft.types import (
    ENTRY_CONFIG,
    ENTRY_NOOP,
    ENTRY_NORMAL,
    NO_NODE,
    DurableState,
    Entry,
    HardState,
    SnapshotMeta,
)
from minkms.sim.harness import MemoryCluster, cluster_config

NO_PREVOTE = RaftOptions(pre_vote=False, check_quorum=False)


def lone_core(node=1, voters=(1, 2, 3), options=RaftOptions(), durable=None, seed=0):
    """A core whose messages a test feeds and reads by hand."""
    if durable is None:
        durable = bootstrap_state(cluster_config(voters))
    return RaftCore(node, durable, random.Random(seed), options)


def drain(core):
    """Process every Ready of C{core}; return the messages it sent."""
    sent = []
    while core.has_ready():
        ready = core.ready()
        sent.extend(ready.send_first + ready.messages)
        core.advance(ready)
    return sent


def run_until_leader(cluster, node):
    """Run message rounds until C{node} leads, without processing its first leader Ready."""
    for _ in range(10):
        if cluster.cores[node].role == LEADER:
            return cluster.cores[node]
        cluster.process()
        cluster.deliver()
    raise AssertionError(f"node {node} did not win")


def log_of(core):
    """(index, term) of every entry a core holds."""
    return [(e.index, e.term) for e in core.log.entries_between(core.log.first_index(), core.log.last_index())]


class ElectionTests(SynchronousTestCase):
    """Section 5.2: leader election."""

    def test_timeout_is_randomized_in_t_to_2t(self):
        """A follower campaigns after between T and 2T-1 ticks without a leader, as its RNG says."""
        seen = set()
        for seed in range(40):
            core = lone_core(options=NO_PREVOTE, seed=seed)
            drain(core)
            ticks = 0
            while core.role == FOLLOWER:
                core.tick()
                ticks += 1
            seen.add(ticks)
            self.assertEqual(core.role, CANDIDATE)
        self.assertTrue(min(seen) >= 10 and max(seen) <= 19, seen)
        self.assertGreater(len(seen), 5)

    def test_same_seed_same_timeout(self):
        """The timeout comes from the injected RNG only."""

        def ticks_to_campaign(seed):
            core = lone_core(options=NO_PREVOTE, seed=seed)
            ticks = 0
            while core.role == FOLLOWER:
                core.tick()
                ticks += 1
            return ticks

        self.assertEqual(ticks_to_campaign(7), ticks_to_campaign(7))

    def test_candidate_votes_for_itself_and_asks_voters(self):
        """A candidate increments its term, votes for itself and sends RequestVote to every other voter."""
        core = lone_core(options=NO_PREVOTE)
        drain(core)
        core.campaign()
        ready = core.ready()
        self.assertEqual((core.term, core.vote), (2, 1))
        self.assertEqual(ready.hard_state, HardState(2, 1, 1))
        self.assertTrue(ready.must_sync)
        requests = [m for m in ready.messages if isinstance(m, VoteRequest)]
        self.assertEqual(sorted(m.dst for m in requests), [2, 3])
        self.assertTrue(all(m.term == 2 and not m.pre for m in requests))

    def test_majority_elects_and_leader_appends_noop(self):
        """A candidate with a majority becomes leader and appends an empty entry of its term (section 8)."""
        cluster = MemoryCluster([1, 2, 3], NO_PREVOTE)
        leader = cluster.elect(1)
        self.assertEqual(leader.role, LEADER)
        last = leader.log.entry(leader.log.last_index())
        self.assertEqual((last.term, last.kind), (leader.term, ENTRY_NOOP))
        self.assertEqual(leader.log.committed, last.index)
        for node in (2, 3):
            self.assertEqual(cluster.cores[node].leader, 1)

    def test_leader_counts_itself_only_once_persisted(self):
        """
        A leader's Appends leave before its own write (thesis 10.2.1), so a
        follower may answer first; that answer alone commits nothing: the
        leader's own vote counts once its write is persisted.
        """
        core = lone_core(options=NO_PREVOTE)
        drain(core)
        core.campaign()
        drain(core)
        core.step(VoteResponse(2, 1, core.term, granted=True))
        ready = core.ready()
        noop = ready.entries[-1].index
        sent = [m for m in ready.send_first if isinstance(m, Append) and m.entries]
        self.assertEqual(sorted(m.dst for m in sent), [2, 3])
        core.step(AppendResponse(2, 1, core.term, index=noop))
        self.assertLess(core.log.committed, noop)
        core.advance(ready)
        self.assertEqual(core.log.committed, noop)

    def test_follower_answers_only_after_persisting(self):
        """A follower's answers never go out before its Ready is persisted."""
        core = lone_core(node=2)
        drain(core)
        core.step(Append(1, 2, 2, prev_index=1, prev_term=1, entries=(Entry(2, 2, ENTRY_NOOP, b""),)))
        ready = core.ready()
        self.assertEqual(ready.send_first, ())
        self.assertEqual(core.early_messages(), ())
        self.assertEqual([type(m) for m in ready.messages], [AppendResponse])

    def test_candidate_loses_to_majority_of_rejections(self):
        """A candidate that a majority rejects goes back to following."""
        core = lone_core(options=NO_PREVOTE)
        drain(core)
        core.campaign()
        drain(core)
        core.step(VoteResponse(2, 1, core.term, granted=False))
        core.step(VoteResponse(3, 1, core.term, granted=False))
        self.assertEqual(core.role, FOLLOWER)

    def test_single_voter_elects_itself(self):
        """A one-voter cluster elects itself on its first campaign."""
        core = lone_core(voters=(1,))
        core.campaign()
        self.assertEqual(core.role, LEADER)

    def test_sole_voter_campaigns_at_its_first_tick(self):
        """A one-voter cluster (a single node restarting) does not wait out an election timeout."""
        core = lone_core(voters=(1,))
        core.tick()
        self.assertEqual(core.role, LEADER)

    def test_learner_never_campaigns(self):
        """A learner ticks forever without campaigning."""
        cluster = MemoryCluster([1, 2], learners=[3])
        learner = cluster.cores[3]
        for _ in range(100):
            learner.tick()
        self.assertEqual(learner.role, FOLLOWER)
        learner.campaign()
        self.assertEqual(learner.role, FOLLOWER)


class TermTests(SynchronousTestCase):
    """Section 5.1: terms."""

    def test_higher_term_turns_leader_into_follower(self):
        """A leader that sees a higher term in an Append steps down and adopts the term and sender as leader."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        leader.step(Append(2, 1, leader.term + 5, prev_index=0, prev_term=0))
        self.assertEqual((leader.role, leader.term, leader.leader, leader.vote), (FOLLOWER, 7, 2, None))

    def test_lower_term_append_is_answered_with_own_term(self):
        """A stale leader's Append gets a reply carrying the higher term, so it steps down."""
        core = lone_core()
        core.step(Append(2, 1, 5, prev_index=1, prev_term=1))
        drain(core)
        core.step(Append(3, 1, 4, prev_index=1, prev_term=1, entries=(Entry(2, 4),)))
        replies = drain(core)
        self.assertEqual(replies, [AppendResponse(1, 3, 5, reject=True)])
        self.assertEqual(core.log.last_index(), 1)

    def test_stale_leader_steps_down_on_reply(self):
        """The stale leader steps down when the reply with the higher term arrives."""
        cluster = MemoryCluster([1, 2, 3], RaftOptions(check_quorum=False))
        old = cluster.elect(1)
        cluster.isolate(1)
        cluster.elect(2)
        cluster.heal()
        old.tick()
        cluster.stabilize()
        self.assertEqual((old.role, old.term), (FOLLOWER, cluster.cores[2].term))


class VoteTests(SynchronousTestCase):
    """Section 5.4.1: who gets a vote."""

    def test_one_vote_per_term(self):
        """A node grants at most one vote per term."""
        core = lone_core(options=NO_PREVOTE)
        core.step(VoteRequest(2, 1, 2, last_index=1, last_term=1))
        core.step(VoteRequest(3, 1, 2, last_index=1, last_term=1))
        core.step(VoteRequest(2, 1, 2, last_index=1, last_term=1))
        answers = [(m.dst, m.granted) for m in drain(core) if isinstance(m, VoteResponse)]
        self.assertEqual(answers, [(2, True), (3, False), (2, True)])
        self.assertEqual(core.vote, 2)

    def test_vote_restriction(self):
        """A vote goes only to a candidate whose log is at least as up to date: last term first, then length."""
        durable = DurableState(
            HardState(3, None, 1),
            None,
            bootstrap_state(cluster_config([1, 2, 3])).entries + (Entry(2, 2), Entry(3, 3)),
        )
        cases = [
            ((3, 2), False),
            ((2, 3), False),
            ((3, 3), True),
            ((4, 3), True),
            ((2, 4), True),
        ]
        for (last_index, last_term), granted in cases:
            core = lone_core(options=NO_PREVOTE, durable=durable)
            core.step(VoteRequest(2, 1, 4, last_index=last_index, last_term=last_term))
            [answer] = [m for m in drain(core) if isinstance(m, VoteResponse)]
            self.assertEqual(answer.granted, granted, (last_index, last_term))


class PreVoteTests(SynchronousTestCase):
    """Dissertation section 9.6: PreVote, and ignoring votes while a leader is live."""

    def test_prevote_does_not_bump_terms(self):
        """A partitioned node keeps pre-campaigning without raising its own or anyone's term."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        term = leader.term
        cluster.isolate(3)
        for _ in range(100):
            cluster.tick_all()
        self.assertEqual(cluster.cores[3].term, term)
        self.assertIn(cluster.cores[3].role, (FOLLOWER, PRE_CANDIDATE))
        cluster.heal()
        for _ in range(30):
            cluster.tick_all()
        self.assertEqual(leader.role, LEADER)
        self.assertEqual(leader.term, term)

    def test_prevote_grant_keeps_voter_state(self):
        """Granting a PreVote changes neither the voter's term nor its vote."""
        core = lone_core()
        core.step(VoteRequest(2, 1, 2, last_index=1, last_term=1, pre=True))
        [answer] = drain(core)
        self.assertEqual(answer, VoteResponse(1, 2, 2, pre=True, granted=True))
        self.assertEqual((core.term, core.vote), (1, None))

    def test_votes_ignored_while_leader_is_live(self):
        """With CheckQuorum, a follower that heard from its leader within T ignores (pre)votes of higher terms."""
        core = lone_core()
        core.step(Heartbeat(2, 1, 1, commit=1))
        drain(core)
        core.step(VoteRequest(3, 1, 2, last_index=9, last_term=9, pre=True))
        core.step(VoteRequest(3, 1, 2, last_index=9, last_term=9))
        self.assertEqual(drain(core), [])
        self.assertEqual(core.term, 1)

    def test_transfer_vote_overrides_lease(self):
        """A vote marked as a leadership transfer is considered even during the lease."""
        core = lone_core()
        core.step(Heartbeat(2, 1, 1, commit=1))
        drain(core)
        core.step(VoteRequest(3, 1, 2, last_index=1, last_term=1, transfer=True))
        [answer] = drain(core)
        self.assertTrue(answer.granted)
        self.assertEqual(core.term, 2)

    def test_prevote_then_vote(self):
        """With PreVote, a winning pre-candidate becomes a candidate and then leader."""
        cluster = MemoryCluster([1, 2, 3])
        core = cluster.cores[1]
        core.campaign()
        self.assertEqual((core.role, core.term), (PRE_CANDIDATE, 1))
        cluster.stabilize()
        self.assertEqual((core.role, core.term), (LEADER, 2))


class CheckQuorumTests(SynchronousTestCase):
    """Dissertation section 6.2: the leader steps down without a live majority."""

    def test_isolated_leader_steps_down(self):
        """A leader that hears from no majority for an election timeout becomes a follower."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        cluster.isolate(1)
        for _ in range(2 * leader.options.election_ticks):
            cluster.tick_all()
        self.assertEqual(leader.role, FOLLOWER)
        self.assertEqual(leader.leader, NO_NODE)

    def test_connected_leader_stays(self):
        """A leader with a live majority keeps leading."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        cluster.isolate(3)
        for _ in range(50):
            cluster.tick_all()
        self.assertEqual(leader.role, LEADER)


class CommitTests(SynchronousTestCase):
    """Sections 5.3 and 5.4.2: replication and the commit rule."""

    def test_committed_entries_applied_everywhere_in_order(self):
        """Proposed entries commit on a majority and every node applies the same sequence."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        indexes = [leader.propose(b"x%d" % i) for i in range(5)]
        cluster.stabilize()
        for node in (1, 2, 3):
            applied = [e.index for e in cluster.applied[node]]
            self.assertEqual(applied, list(range(1, indexes[-1] + 1)))
            self.assertEqual(cluster.applied[node][-1].data, b"x4")

    def test_follower_commits_min_of_leader_commit_and_last_new(self):
        """A follower's commit index never passes the last entry it got from this Append."""
        core = lone_core()
        core.step(Append(2, 1, 2, prev_index=1, prev_term=1, commit=5, entries=(Entry(2, 2),)))
        self.assertEqual(core.log.committed, 2)

    def test_not_committed_without_majority(self):
        """An entry on a minority is not committed."""
        cluster = MemoryCluster([1, 2, 3, 4, 5])
        leader = cluster.elect(1)
        committed = leader.log.committed
        for node in (3, 4, 5):
            cluster.isolate(node)
        leader.propose(b"x")
        cluster.stabilize()
        self.assertEqual(leader.log.committed, committed)

    def test_figure_8(self):
        """
        A leader does not commit an entry of an earlier term by counting
        replicas (figure 8): a later leader could still overwrite it.
        """
        cluster = MemoryCluster([1, 2, 3, 4, 5], NO_PREVOTE)
        s1 = cluster.elect(1)
        # (a) S1 leads term 2 and replicates a new entry to S2 only.
        for node in (3, 4, 5):
            cluster.isolate(node)
        index = s1.propose(b"term2")
        cluster.stabilize()
        self.assertEqual(cluster.cores[2].log.term(index), 2)
        # (b) S5 wins term 3 with S3 and S4; its entry at that index reaches no one.
        cluster.heal()
        cluster.isolate(1)
        cluster.isolate(2)
        cluster.cores[5].campaign()
        s5 = run_until_leader(cluster, 5)
        cluster.isolate(5)
        cluster.stabilize()
        self.assertEqual(s5.log.term(index), 3)
        self.assertEqual(cluster.cores[3].log.last_index(), index - 1)
        # (c) S1 restarts, wins term 4 and replicates its term-2 entry, but not its no-op, to S3.
        cluster.heal()
        for node in (4, 5):
            cluster.isolate(node)
        s1 = cluster.restart(1)
        s1.campaign()
        cluster.stabilize()
        s1.campaign()
        run_until_leader(cluster, 1)
        self.assertEqual(s1.term, 4)
        noop = s1.log.last_index()
        for _ in range(10):
            cluster.process()
            for message in cluster.take(lambda m: isinstance(m, Append)):
                if message.dst in (4, 5):
                    continue
                kept = tuple(e for e in message.entries if e.index < noop)
                cluster.cores[message.dst].step(attrs.evolve(message, entries=kept))
            cluster.deliver()
        self.assertEqual([cluster.cores[n].log.term(index) for n in (1, 2, 3)], [2, 2, 2])
        self.assertEqual(s1.status().progress[3].match, index)
        self.assertLess(s1.log.committed, index)
        # (d) Had it been committed, S5 could now win (last term 3 beats 2) and overwrite it.
        cluster.heal()
        cluster.isolate(1)
        s5.step(Append(1, 5, 4, prev_index=0, prev_term=0))
        cluster.outbox.clear()
        s5.campaign()
        run_until_leader(cluster, 5)
        cluster.stabilize()
        self.assertEqual(cluster.cores[3].log.term(index), 3)

    def test_old_term_entries_commit_with_current_term_entry(self):
        """Once an entry of its own term commits, earlier entries commit with it."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        cluster.isolate(2)
        cluster.isolate(3)
        stuck = leader.propose(b"old")
        cluster.stabilize()
        cluster.heal()
        leader.step(Append(2, 1, leader.term + 1, prev_index=0, prev_term=0))
        cluster.stabilize()
        new_leader = cluster.elect(1)
        self.assertEqual(new_leader.role, LEADER)
        self.assertGreaterEqual(new_leader.log.committed, stuck)


class RepairTests(SynchronousTestCase):
    """Section 5.3: log matching and repair."""

    def _divergent_follower(self, extra):
        """Node 3 holds C{extra} uncommitted entries of a deposed term 2."""
        cluster = MemoryCluster([1, 2, 3], NO_PREVOTE)
        old = cluster.elect(3)
        cluster.isolate(3)
        for i in range(extra):
            old.propose(b"lost%d" % i)
        cluster.process()
        cluster.outbox.clear()
        cluster.elect(1)
        leader = cluster.cores[1]
        for i in range(3):
            leader.propose(b"kept%d" % i)
        cluster.stabilize()
        cluster.heal()
        return cluster, leader

    def test_conflicting_entries_replaced(self):
        """A follower's conflicting uncommitted entries are replaced by the leader's."""
        cluster, leader = self._divergent_follower(5)
        leader.propose(b"after")
        cluster.tick_all(3)
        self.assertEqual(log_of(cluster.cores[3]), log_of(leader))

    def test_fast_backoff_skips_a_term_per_round_trip(self):
        """The conflict hint lets the leader skip the whole divergent term in one round trip."""
        cluster, leader = self._divergent_follower(50)
        leader.propose(b"after")
        rejections = 0
        for _ in range(20):
            leader.tick()
            cluster.process()
            rejections += sum(1 for m in cluster.outbox if isinstance(m, AppendResponse) and m.reject)
            if not cluster.outbox:
                break
            cluster.deliver()
        self.assertEqual(log_of(cluster.cores[3]), log_of(leader))
        self.assertLessEqual(rejections, 2)

    def test_stale_append_does_not_truncate(self):
        """A delayed Append whose entries already match does not drop the entries after them."""
        core = lone_core()
        entries = tuple(Entry(i, 2) for i in range(2, 7))
        core.step(Append(2, 1, 2, prev_index=1, prev_term=1, commit=1, entries=entries))
        core.step(Append(2, 1, 2, prev_index=1, prev_term=1, commit=1, entries=entries[:2]))
        self.assertEqual(core.log.last_index(), 6)
        answers = [m for m in drain(core) if isinstance(m, AppendResponse)]
        self.assertEqual([m.index for m in answers], [6, 3])

    def test_rejection_carries_hint(self):
        """A follower that lacks prev_index rejects with its last index as hint."""
        core = lone_core()
        core.step(Append(2, 1, 2, prev_index=7, prev_term=2))
        [answer] = drain(core)
        self.assertEqual((answer.reject, answer.index, answer.hint_index, answer.hint_term), (True, 7, 1, 1))

    def test_truncating_committed_entry_is_refused(self):
        """An order to overwrite a committed entry is an invariant violation, never obeyed."""
        core = lone_core()
        core.step(Append(2, 1, 2, prev_index=1, prev_term=1, commit=2, entries=(Entry(2, 2),)))
        self.assertRaises(InvariantViolation, core.log.append, [Entry(2, 3)])


class FlowControlTests(SynchronousTestCase):
    """Batching, size bounds and pipelining of Appends."""

    def test_append_size_bound(self):
        """Appends carry at most max_append_bytes and always encode under the AMP-safe limit."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        for _ in range(20):
            leader.propose(b"x" * 20_000)
        cluster.process(1)
        appends = [m for m in cluster.outbox if isinstance(m, Append) and m.entries]
        self.assertTrue(appends)
        for message in appends:
            self.assertLess(len(codec.encode(message)), codec.MAX_MESSAGE_BYTES)
        cluster.stabilize()
        self.assertEqual(cluster.cores[2].log.last_index(), leader.log.last_index())

    def test_large_entry_travels_alone(self):
        """
        An entry larger than a batch (a restored backup) is sent alone in its
        Append and replicates; one over max_entry_bytes is refused.
        """
        cluster = MemoryCluster([1, 2, 3], RaftOptions(max_entry_bytes=200_000))
        leader = cluster.elect(1)
        leader.propose(b"small")
        index = leader.propose(b"x" * 150_000)
        leader.propose(b"after")
        cluster.process(1)
        carrying = [m for m in cluster.outbox if isinstance(m, Append) and any(e.index == index for e in m.entries)]
        self.assertTrue(carrying)
        for message in carrying:
            self.assertEqual([e.index for e in message.entries], [index])
        cluster.stabilize()
        for node in (2, 3):
            self.assertEqual(cluster.cores[node].log.last_index(), leader.log.last_index())
            self.assertIn(b"x" * 150_000, [e.data for e in cluster.applied[node]])
        self.assertRaises(ProposalDropped, leader.propose, b"x" * 200_001)

    def test_inflight_and_entry_count_bounds(self):
        """In replicate state the leader pipelines at most max_inflight Appends of at most max_append_entries."""
        options = RaftOptions(max_append_entries=2, max_inflight=3)
        cluster = MemoryCluster([1, 2], options)
        leader = cluster.elect(1)
        for i in range(20):
            leader.propose(b"%d" % i)
        cluster.process(1)
        appends = [m for m in cluster.outbox if isinstance(m, Append)]
        self.assertEqual(len(appends), 3)
        self.assertTrue(all(len(m.entries) <= 2 for m in appends))
        cluster.stabilize()
        self.assertEqual(cluster.cores[2].log.last_index(), leader.log.last_index())


class SnapshotTests(SynchronousTestCase):
    """Section 7: compaction and InstallSnapshot."""

    def test_lagging_follower_gets_chunked_snapshot(self):
        """A follower behind the compaction point receives the snapshot in chunks and catches up."""
        options = RaftOptions(snapshot_chunk_bytes=100)
        cluster = MemoryCluster([1, 2, 3], options)
        leader = cluster.elect(1)
        cluster.isolate(3)
        for i in range(10):
            leader.propose(b"v%d" % i)
        cluster.stabilize()
        data = bytes(range(256)) * 2
        snapshot = leader.compact(leader.log.applied, data)
        self.assertEqual(leader.log.first_index(), snapshot.meta.index + 1)
        cluster.heal()
        chunks = []
        for _ in range(40):
            leader.tick()
            cluster.process()
            chunks += [m for m in cluster.outbox if isinstance(m, InstallSnapshot)]
            cluster.deliver()
        self.assertEqual(len({m.offset for m in chunks}), 6)
        self.assertTrue(all(len(m.data) <= 100 for m in chunks))
        [installed] = cluster.snapshots[3]
        self.assertEqual(installed, snapshot)
        leader.propose(b"after")
        cluster.stabilize()
        self.assertEqual(cluster.applied[3][-1].data, b"after")
        self.assertEqual(cluster.cores[3].log.offset, snapshot.meta.index)

    def test_snapshot_keeps_matching_suffix(self):
        """A follower holding the snapshot's last entry keeps its log after it and installs nothing."""
        core = lone_core()
        entries = tuple(Entry(i, 2) for i in range(2, 6))
        core.step(Append(2, 1, 2, prev_index=1, prev_term=1, commit=1, entries=entries))
        drain(core)
        meta = SnapshotMeta(3, 2, b"")
        core.step(InstallSnapshot(2, 1, 2, meta=meta, offset=0, data=b"s", done=True))
        ready = core.ready()
        self.assertIsNone(ready.snapshot)
        self.assertEqual(core.log.last_index(), 5)
        self.assertEqual(core.log.committed, 3)
        self.assertEqual(ready.messages, (AppendResponse(1, 2, 2, index=3),))

    def test_out_of_order_chunk_asks_for_expected_offset(self):
        """A chunk at an unexpected offset is answered with the offset the follower expects."""
        core = lone_core()
        meta = SnapshotMeta(9, 2, b"")
        core.step(InstallSnapshot(2, 1, 2, meta=meta, offset=0, data=b"abc"))
        core.step(InstallSnapshot(2, 1, 2, meta=meta, offset=10, data=b"x"))
        answers = drain(core)
        self.assertEqual(answers, [SnapshotResponse(1, 2, 2, 9, 3), SnapshotResponse(1, 2, 2, 9, 3)])

    def test_restart_from_snapshot_and_tail(self):
        """A node restored from a snapshot and the entries after it re-applies only those entries."""
        cluster = MemoryCluster([1])
        leader = cluster.elect(1)
        for i in range(5):
            leader.propose(b"v%d" % i)
        cluster.process()
        snapshot = leader.compact(4, b"state-at-4")
        cluster.disks[1].compact(snapshot)
        leader.propose(b"v5")
        cluster.process()
        cluster.applied[1] = []
        restarted = cluster.restart(1)
        cluster.process()
        self.assertEqual(restarted.log.offset, 4)
        self.assertEqual([e.index for e in cluster.applied[1]], list(range(5, restarted.log.last_index() + 1)))


class MembershipTests(SynchronousTestCase):
    """Dissertation chapter 4: single-server membership changes."""

    def test_no_change_before_commit_in_term(self):
        """A new leader may not change membership until it has committed an entry of its term."""
        cluster = MemoryCluster([1, 2, 3])
        cluster.cores[1].campaign()
        leader = run_until_leader(cluster, 1)
        cluster.process(1)
        self.assertLess(leader.log.committed, leader.log.last_index())
        self.assertRaises(ConfigChangeRejected, leader.propose_config, ConfigChange.add_learner(4, "n4:7373"))
        cluster.stabilize()
        leader.propose_config(ConfigChange.add_learner(4, "n4:7373"))

    def test_one_change_at_a_time(self):
        """A second change waits until the first one commits."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        cluster.isolate(2)
        cluster.isolate(3)
        leader.propose_config(ConfigChange.add_learner(4, "n4:7373"))
        self.assertRaises(ConfigChangeRejected, leader.propose_config, ConfigChange.remove(3))
        cluster.heal()
        cluster.stabilize()
        leader.propose_config(ConfigChange.remove(3))

    def test_learner_joins_catches_up_and_is_promoted(self):
        """A new node joins as a non-voting learner, receives the log, then becomes a voter."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        leader.propose(b"before")
        cluster.stabilize()
        cluster.add_node(4)
        leader.propose_config(ConfigChange.add_learner(4, "n4:7373"))
        cluster.stabilize()
        learner = cluster.cores[4]
        self.assertEqual(learner.config.learners, {4})
        self.assertEqual(leader.status().progress[4].match, leader.log.last_index())
        self.assertTrue(leader.status().progress[4].learner)
        self.assertEqual([e.data for e in cluster.applied[4] if e.kind == ENTRY_NORMAL], [b"before"])
        leader.propose_config(ConfigChange.promote(4))
        cluster.stabilize()
        self.assertEqual(learner.config.voters, {1, 2, 3, 4})

    def test_learner_not_counted_in_quorum(self):
        """Acknowledgements of learners do not commit entries."""
        cluster = MemoryCluster([1, 2], learners=[3, 4])
        leader = cluster.elect(1)
        committed = leader.log.committed
        cluster.isolate(2)
        leader.propose(b"x")
        cluster.stabilize()
        self.assertEqual(leader.log.committed, committed)
        self.assertEqual(cluster.cores[3].log.last_index(), leader.log.last_index())

    def test_auto_promotion(self):
        """With auto_promote_lag, the leader promotes a learner that caught up."""
        options = RaftOptions(auto_promote_lag=0)
        cluster = MemoryCluster([1, 2, 3], options)
        leader = cluster.elect(1)
        cluster.add_node(4)
        leader.propose_config(ConfigChange.add_learner(4, "n4:7373"))
        cluster.stabilize()
        cluster.tick_all(3)
        cluster.stabilize()
        self.assertIn(4, leader.config.voters)

    def test_removed_leader_steps_down_after_commit(self):
        """A leader that removes itself leads until the change commits, then steps down and hands over."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        leader.propose_config(ConfigChange.remove(1))
        self.assertEqual(leader.role, LEADER)
        cluster.stabilize()
        self.assertEqual(leader.role, FOLLOWER)
        self.assertEqual(sorted(leader.config.voters), [2, 3])
        self.assertEqual(len(cluster.leaders()), 1)
        new_leader = cluster.cores[cluster.leaders()[0]]
        self.assertIn(new_leader.id, (2, 3))
        new_leader.propose(b"after")
        cluster.stabilize()
        self.assertEqual(cluster.applied[2][-1].data, b"after")

    def test_removed_node_cannot_disrupt(self):
        """A removed node that never learned of its removal cannot win an election or raise terms."""
        cluster = MemoryCluster([1, 2, 3, 4])
        leader = cluster.elect(1)
        cluster.isolate(4)
        leader.propose_config(ConfigChange.remove(4))
        cluster.stabilize()
        term = leader.term
        cluster.heal()
        for _ in range(60):
            cluster.tick_all()
        self.assertEqual(leader.role, LEADER)
        self.assertEqual(leader.term, term)

    def test_structural_rules(self):
        """Changes that do not fit the membership are refused."""
        config = cluster_config([1, 2], learners=[3])
        self.assertRaises(ConfigChangeRejected, ConfigChange.add_learner(2, "x").apply, config)
        self.assertRaises(ConfigChangeRejected, ConfigChange.add_learner(5, "n1:7373").apply, config)
        self.assertRaises(ConfigChangeRejected, ConfigChange.promote(2).apply, config)
        self.assertRaises(ConfigChangeRejected, ConfigChange.remove(9).apply, config)
        self.assertRaises(ConfigChangeRejected, ConfigChange.remove(1).apply, cluster_config([1]))
        self.assertEqual(ConfigChange.add_learner(7, "n7:1").apply(config).next_id, 8)


class TransferTests(SynchronousTestCase):
    """Dissertation section 3.10: leadership transfer."""

    def test_transfer_to_up_to_date_follower(self):
        """The target gets TimeoutNow, campaigns at once and wins."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        leader.transfer_leadership(2)
        cluster.stabilize()
        self.assertEqual(cluster.leaders(), [2])
        self.assertEqual(cluster.cores[2].term, leader.term)

    def test_transfer_to_lagging_follower_catches_it_up_first(self):
        """A lagging target is brought up to date before it is told to campaign."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        cluster.isolate(3)
        for i in range(5):
            leader.propose(b"%d" % i)
        cluster.stabilize()
        cluster.heal()
        leader.transfer_leadership(3)
        self.assertRaises(ProposalDropped, leader.propose, b"during")
        for _ in range(leader.options.election_ticks - 1):
            cluster.tick_all()
        cluster.stabilize()
        self.assertEqual(cluster.leaders(), [3])

    def test_transfer_aborts_after_election_timeout(self):
        """If the target never answers, the leader takes proposals again after an election timeout."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        cluster.isolate(3)
        leader.transfer_leadership(3)
        self.assertRaises(ProposalDropped, leader.propose, b"x")
        for _ in range(leader.options.election_ticks):
            cluster.tick_all()
        self.assertEqual(leader.role, LEADER)
        leader.propose(b"x")

    def test_not_leader(self):
        """Only the leader proposes; others name the leader they know."""
        cluster = MemoryCluster([1, 2, 3])
        cluster.elect(1)
        error = self.assertRaises(NotLeader, cluster.cores[2].propose, b"x")
        self.assertEqual(error.leader_id, 1)
        self.assertRaises(NotLeader, cluster.cores[2].transfer_leadership, 3)


class ReadIndexTests(SynchronousTestCase):
    """Dissertation section 6.4: ReadIndex."""

    def test_leader_read_confirmed_by_heartbeat_round(self):
        """A leader read is released only after a majority answered a heartbeat, at the commit index."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        leader.read_index(b"r1")
        cluster.process(1)
        self.assertEqual(cluster.read_states[1], [])
        self.assertTrue(any(isinstance(m, Heartbeat) and m.context for m in cluster.outbox))
        cluster.stabilize()
        [state] = cluster.read_states[1]
        self.assertEqual((state.request_id, state.index), (b"r1", leader.log.committed))

    def test_read_waits_for_commit_in_term(self):
        """A new leader holds reads until it has committed an entry of its term."""
        cluster = MemoryCluster([1, 2, 3])
        cluster.cores[1].campaign()
        leader = run_until_leader(cluster, 1)
        leader.read_index(b"early")
        cluster.process(1)
        self.assertFalse(any(isinstance(m, Heartbeat) and m.context for m in cluster.outbox))
        cluster.stabilize()
        [state] = cluster.read_states[1]
        self.assertGreaterEqual(state.index, leader.log.last_index())

    def test_isolated_leader_never_confirms(self):
        """A leader cut off from the majority never releases the read."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        cluster.isolate(1)
        leader.read_index(b"r")
        for _ in range(5):
            cluster.tick_all()
        self.assertEqual(cluster.read_states[1], [])

    def test_follower_read_is_forwarded(self):
        """A follower's read goes to the leader and comes back as a read state on the follower."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        cluster.cores[3].read_index(b"f")
        cluster.stabilize()
        self.assertEqual(
            [(s.request_id, s.index) for s in cluster.read_states[3]],
            [(b"f", leader.log.committed)],
        )

    def test_no_leader_no_read(self):
        """Without a known leader a read is refused at once."""
        core = lone_core()
        self.assertRaises(NotLeader, core.read_index, b"x")


class DriverContractTests(SynchronousTestCase):
    """The Ready/advance contract."""

    def test_must_sync_only_for_entries_term_vote(self):
        """A commit-only change needs no fsync; new entries or a vote do."""
        core = lone_core()
        drain(core)
        core.step(Append(2, 1, 2, prev_index=1, prev_term=1, commit=1, entries=(Entry(2, 2),)))
        ready = core.ready()
        self.assertTrue(ready.must_sync)
        self.assertEqual(ready.entries, (Entry(2, 2),))
        core.advance(ready)
        core.step(Heartbeat(2, 1, 2, commit=2))
        ready = core.ready()
        self.assertFalse(ready.must_sync)
        self.assertEqual(ready.hard_state, HardState(2, None, 2))
        self.assertEqual(ready.entries, ())
        core.advance(ready)

    def test_ready_needs_advance(self):
        """A second Ready before advance() is a driver bug."""
        core = lone_core()
        core.ready()
        self.assertRaises(RuntimeError, core.ready)

    def test_overwrite_between_ready_and_advance(self):
        """Entries overwritten while a Ready is out are handed again from the overwrite point."""
        core = lone_core()
        drain(core)
        core.step(Append(2, 1, 2, prev_index=1, prev_term=1, entries=(Entry(2, 2), Entry(3, 2))))
        first = core.ready()
        core.step(Append(3, 1, 3, prev_index=2, prev_term=2, entries=(Entry(3, 3),)))
        core.advance(first)
        second = core.ready()
        self.assertEqual(first.entries, (Entry(2, 2), Entry(3, 2)))
        self.assertEqual(second.entries, (Entry(3, 3),))

    def test_restart_keeps_term_vote_and_log(self):
        """A node restored from its disk has the term, vote and entries it persisted."""
        cluster = MemoryCluster([1, 2, 3])
        cluster.elect(2)
        cluster.cores[2].propose(b"x")
        cluster.stabilize()
        before = cluster.cores[1]
        after = cluster.restart(1)
        self.assertEqual((after.term, after.vote), (before.term, before.vote))
        self.assertEqual(log_of(after), log_of(before))
        self.assertEqual(after.role, FOLLOWER)

    def test_status(self):
        """status() reports role, leader, term, commit, applied, config and the leader's per-peer progress."""
        cluster = MemoryCluster([1, 2, 3])
        leader = cluster.elect(1)
        cluster.tick_all(2)
        status = leader.status()
        self.assertEqual((status.role, status.leader, status.node_id), (LEADER, 1, 1))
        self.assertEqual(status.commit, status.applied)
        self.assertEqual(sorted(status.progress), [1, 2, 3])
        self.assertEqual(status.progress[2].match, status.last_index)
        follower = cluster.cores[2].status()
        self.assertEqual((follower.role, follower.leader, follower.progress), (FOLLOWER, 1, {}))
        self.assertIsNotNone(follower.leader_contact_age)
        self.assertEqual(status.config.voters, {1, 2, 3})

    def test_config_entry_kind(self):
        """A founding log is one committed configuration entry."""
        state = bootstrap_state(cluster_config([1, 2]))
        self.assertEqual([(e.index, e.term, e.kind) for e in state.entries], [(1, 1, ENTRY_CONFIG)])
        self.assertEqual(state.hard_state.commit, 1)
