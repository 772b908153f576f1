"""
The one Raft driver (L{minkms.driver.RaftDriver}) over fake ports: the
order of its work, how it settles writes and reads, and the write-timeout
answer of the node.
"""

import random

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from minkms.driver import REFUSE, SERVE, RaftDriver
from minkms.driver.reads import PendingReads
from minkms.driver.waiters import NOT_APPLIED, UNKNOWN_OUTCOME, WriteWaiters
from minkms.errors import KMSError
from minkms.raft.core import RaftCore, RaftOptions, bootstrap_state
from minkms.raft.messages import Append, AppendResponse, Heartbeat, VoteResponse
from minkms.raft.ready import LEADER
from minkms.raft.types import DurableState
from minkms.server.writes import WRITE_TIMEOUT, timed_out
from minkms.sim.harness import cluster_config


class FakeStorage:
    """Persists when the test says so."""

    def __init__(self):
        self.pending: list = []
        self.synced = 0

    def persist(self, ready):
        d = defer.Deferred()
        self.pending.append((ready, d))
        return d

    def flush(self):
        while self.pending:
            ready, d = self.pending.pop(0)
            self.synced += ready.must_sync
            d.callback(None)

    def save_snapshot(self, snapshot):
        return defer.succeed(None)


class FakeTransport:
    """Keeps what was sent, and in C{events} the sends and flushes in order."""

    def __init__(self):
        self.sent = []
        self.events: list = []

    def send(self, message):
        self.sent.append(message)
        self.events.append(message)

    def flush(self):
        self.events.append("flush")


class FakeMachine:
    def __init__(self):
        self.applied = []
        self.dumps = None

    def apply(self, entry):
        self.applied.append(entry.index)
        return f"applied {entry.index}"

    def restore(self, snapshot):
        self.applied = [snapshot.meta.index]

    def dump(self):
        """Done at once, or, once a test set C{dumps} to a list, a Deferred left there for it to fire."""
        if self.dumps is None:
            return defer.succeed(b"state")
        self.dumps.append(defer.Deferred())
        return self.dumps[-1]


def driver_for(voters=(1,), policy=SERVE, now=lambda: 0.0, durable=None, soon=None):
    if durable is None:
        durable = bootstrap_state(cluster_config(voters))
    core = RaftCore(1, durable, random.Random(1), RaftOptions(read_lease=1.0), clock=now)
    storage, transport, machine = FakeStorage(), FakeTransport(), FakeMachine()
    driver = RaftDriver(core, storage, transport, machine, now, 0, reads_without_leader=policy, soon=soon)
    return driver, storage, transport, machine


def elect_of_three(driver, storage, transport):
    """Make node 1 of three the leader (its first Append sent, its own write pending); clear what was sent."""
    driver.core.campaign()
    driver.kick()
    storage.flush()
    driver.step(VoteResponse(2, 1, driver.core.term, pre=True, granted=True))
    storage.flush()
    transport.sent.clear()
    driver.step(VoteResponse(2, 1, driver.core.term, granted=True))


def elect_single(driver, storage):
    driver.core.campaign()
    driver.kick()
    storage.flush()


class LoopTests(SynchronousTestCase):
    def test_inputs_of_one_turn_share_a_ready(self):
        """
        With a next-turn port, proposals (and messages) that arrive
        together go into one Ready: one write for all, nothing before the
        turn ends.
        """
        turns: list = []
        driver, storage, _, _ = driver_for(soon=turns.append)
        elect_single(driver, storage)
        for n in range(3):
            driver.propose(b"w%d" % n)
        self.assertEqual((storage.pending, len(turns)), ([], 1))
        turns.pop()()
        self.assertEqual([len(ready.entries) for ready, _ in storage.pending], [3])

    def test_sends_only_after_persisting(self):
        """Messages of a Ready leave only once its records are durable."""
        driver, storage, transport, _ = driver_for(voters=(1, 2, 3))
        driver.core.campaign()
        driver.kick()
        self.assertEqual(transport.sent, [])
        storage.flush()
        self.assertEqual(sorted(m.dst for m in transport.sent), [2, 3])

    def test_leader_traffic_does_not_wait_for_the_disk(self):
        """
        A leader's Appends leave before its own write, and its heartbeats
        leave while a Ready is being persisted; nothing is committed before
        the leader's own write is durable.
        """
        driver, storage, transport, _ = driver_for(voters=(1, 2, 3))
        elect_of_three(driver, storage, transport)
        self.assertEqual(driver.core.role, LEADER)
        self.assertTrue(storage.pending)
        appends = [m for m in transport.sent if isinstance(m, Append) and m.entries]
        self.assertEqual(sorted(m.dst for m in appends), [2, 3])
        transport.sent.clear()
        driver.tick()
        self.assertEqual(sorted(m.dst for m in transport.sent if isinstance(m, Heartbeat)), [2, 3])
        noop = appends[0].entries[-1].index
        driver.step(AppendResponse(2, 1, driver.core.term, index=noop))
        self.assertLess(driver.core.log.committed, noop)
        storage.flush()
        self.assertEqual(driver.core.log.committed, noop)

    def test_commit_answers_writers_before_its_notices_leave(self):
        """
        A Ready that only commits carries the new stored commit, answers
        the writers and flushes their answers before any of its messages
        go (the followers' commit notices), and every message the driver
        sends is flushed.
        """
        clock = [0.0]
        driver, storage, transport, _ = driver_for(voters=(1, 2, 3), now=lambda: clock[0])
        elect_of_three(driver, storage, transport)
        clock[0] += 5.0
        term = driver.core.term
        noop = driver.core.log.last_index()
        for follower in (2, 3):
            driver.step(AppendResponse(follower, 1, term, index=noop))
        storage.flush()
        index, term = driver.propose(b"x")
        storage.flush()
        order = transport.events
        order.clear()
        driver.wait_applied(index, term).addCallback(order.append)
        driver.step(AppendResponse(2, 1, term, index=index))
        [(ready, _)] = storage.pending
        self.assertEqual((ready.must_sync, ready.hard_state.commit), (False, index))
        storage.flush()
        self.assertEqual(order[:2], [f"applied {index}", "flush"], "the answer leaves first")
        self.assertEqual(order[-1], "flush")
        notices = [m for m in order[2:-1] if isinstance(m, Append) and not m.entries and m.commit == index]
        self.assertEqual(sorted(m.dst for m in notices), [2, 3])
        order.clear()
        driver.propose(b"y")
        self.assertEqual(order[-1], "flush", "the Appends are flushed")
        self.assertEqual(sorted(m.dst for m in order[:-1]), [2, 3])

    def test_snapshots_wait_for_as_many_log_bytes_as_the_last_one(self):
        """
        After C{compact_every} entries a snapshot is taken only once the
        entries applied since the last one hold at least its size: a large
        state is snapshotted less often.
        """
        driver, storage, _, machine = driver_for()
        driver.compact_every = 1
        machine.dump = lambda: defer.succeed(b"s" * 1000)
        elect_single(driver, storage)
        offsets = []
        for _ in range(12):
            driver.propose(b"x" * 100)
            storage.flush()
            offsets.append(driver.core.log.offset)
        self.assertGreater(offsets[0], 0)
        taken = sorted(set(offsets))
        self.assertGreater(len(taken), 1)
        for before, after in zip(taken, taken[1:]):
            self.assertGreaterEqual((after - before) * (100 + 64), 1000)

    def test_snapshot_dumped_later_compacts_to_where_it_was_taken(self):
        """
        A dump that finishes after more entries were applied compacts the
        log to the index it was taken at, and only between Readys; one dump
        runs at a time.
        """
        driver, storage, _, machine = driver_for()
        driver.compact_every = 1
        dumps: list = []
        taken_at: list = []

        def dump():
            taken_at.append(driver.applied)
            dumps.append(defer.Deferred())
            return dumps[-1]

        machine.dump = dump
        elect_single(driver, storage)
        driver.propose(b"x")
        storage.flush()
        self.assertEqual(len(dumps), 1)
        for _ in range(3):
            driver.propose(b"x")
            storage.flush()
        self.assertEqual(len(dumps), 1)
        self.assertEqual(driver.core.log.offset, 0)
        driver.propose(b"x")
        self.assertTrue(driver.busy)
        dumps[0].callback(b"state")
        self.assertEqual(driver.core.log.offset, 0)
        storage.flush()
        self.assertEqual(driver.core.log.offset, taken_at[0])
        self.assertLess(taken_at[0], driver.applied)
        self.assertEqual(driver.core.log.snapshot.data, b"state")
        self.assertEqual(len(dumps), 2)

    def test_dump_covered_by_a_newer_snapshot_is_dropped(self):
        """A dump older than the snapshot the log already starts at does not compact."""
        driver, storage, _, machine = driver_for()
        driver.compact_every = 1
        dumps = machine.dumps = []
        elect_single(driver, storage)
        driver.propose(b"x")
        storage.flush()
        for _ in range(3):
            driver.propose(b"x")
            storage.flush()
        driver.core.compact(driver.applied, b"newer")
        dumps[0].callback(b"older")
        self.assertEqual(driver.core.log.snapshot.data, b"newer")

    def test_dump_finished_while_paused_is_dropped(self):
        """A dump that finishes while the loop is paused (the node rewriting its volume) does not compact."""
        driver, storage, _, machine = driver_for()
        driver.compact_every = 1
        dumps = machine.dumps = []
        saved: list = []
        storage.save_snapshot = lambda snapshot: saved.append(snapshot) or defer.succeed(None)
        elect_single(driver, storage)
        driver.propose(b"x")
        storage.flush()
        driver.paused = True
        dumps[0].callback(b"old")
        driver.paused = False
        driver.propose(b"x")
        storage.flush()
        self.assertEqual(saved, [])
        self.assertEqual(driver.core.log.offset, 0)

    def test_write_answered_once_applied(self):
        """A proposal's Deferred fires with its apply result after the fsync and the apply."""
        driver, storage, _, machine = driver_for()
        elect_single(driver, storage)
        index, term = driver.propose(b"x")
        d = driver.wait_applied(index, term)
        self.assertNoResult(d)
        storage.flush()
        self.assertEqual(self.successResultOf(d), f"applied {index}")
        self.assertIn(index, machine.applied)

    def test_failed_storage_fails_waiters(self):
        """A storage failure answers every waiting write with 503 and stops the loop."""
        driver, storage, _, _ = driver_for()
        elect_single(driver, storage)
        index, term = driver.propose(b"x")
        d = driver.wait_applied(index, term)
        _, pending = storage.pending.pop()
        pending.errback(OSError("disk full"))
        self.assertEqual(self.failureResultOf(d, KMSError).value.status, 503)
        self.assertIsNotNone(driver.failed)

    def test_storage_failing_within_propose(self):
        """A write whose persist fails before its waiter exists is still answered 503 at once."""
        driver, storage, _, _ = driver_for()
        elect_single(driver, storage)
        storage.persist = lambda ready: defer.fail(OSError("disk full"))
        index, term = driver.propose(b"x")
        failure = self.failureResultOf(driver.wait_applied(index, term), KMSError)
        self.assertEqual(failure.value.status, 503)
        self.assertIn("disk full", failure.value.message)


class ReadRuleTests(SynchronousTestCase):
    def test_single_leader_reads_locally(self):
        """A lone leader holds its own lease: reads need no round trip."""
        now = [10.0]
        driver, storage, _, _ = driver_for(now=lambda: now[0])
        elect_single(driver, storage)
        driver.tick()
        storage.flush()
        self.assertIsNone(driver.read_barrier())

    def test_no_leader_serve(self):
        """Without a leader, C{serve} answers from the local state, flagged as unleased."""
        driver, storage, _, _ = driver_for(voters=(1, 2, 3), policy=SERVE)
        d = driver.read_barrier()
        driver.kick()
        storage.flush()
        self.assertIs(self.successResultOf(d), True)

    def test_no_leader_refuse(self):
        """Without a leader, C{refuse} answers 503 at once."""
        driver, _, _, _ = driver_for(voters=(1, 2, 3), policy=REFUSE)
        with self.assertRaises(KMSError) as e:
            driver.read_barrier()
        self.assertEqual(e.exception.status, 503)
        self.assertIn("reads_without_leader is refuse", e.exception.message)

    def test_not_a_member_refuses(self):
        """A node that never joined a cluster does not pass off its empty state."""
        driver, _, _, _ = driver_for(durable=DurableState())
        with self.assertRaises(KMSError):
            driver.read_barrier()


class PendingReadsTests(SynchronousTestCase):
    def test_leased_read_settles_for_the_end_of_the_log(self):
        """
        A leased read waits for the index it was given or for the end of
        the log if that shrank (a new leader replaced entries nobody
        acknowledged); a read confirmed by ReadIndex waits for its index.
        """
        reads = PendingReads()
        leased = reads.wait_index(10, leased=True)
        confirmed = reads.wait_index(10)
        reads.release(9, 10)
        self.assertNoResult(leased)
        reads.release(9, 9)
        self.assertIs(self.successResultOf(leased), False)
        self.assertNoResult(confirmed)
        reads.release(10, 10)
        self.assertIs(self.successResultOf(confirmed), False)


class WaiterTests(SynchronousTestCase):
    def test_snapshot_settles_covered_writes(self):
        """
        A snapshot at (index, term) answers the writes it covers: of its
        term, applied; of a later term, not applied; of an earlier term,
        unknown.
        """
        waiters = WriteWaiters()
        same = waiters.wait(5, 3, applied=0)
        later = waiters.wait(6, 4, applied=0)
        earlier = waiters.wait(7, 2, applied=0)
        beyond = waiters.wait(20, 3, applied=0)
        waiters.on_snapshot(10, 3)
        self.assertIsNone(self.successResultOf(same))
        self.assertEqual(self.failureResultOf(later, KMSError).value.message, NOT_APPLIED)
        self.assertEqual(self.failureResultOf(earlier, KMSError).value.message, UNKNOWN_OUTCOME)
        self.assertNoResult(beyond)

    def test_overwritten_entry_not_applied(self):
        """An entry replaced by another term's at the same index was not applied."""
        waiters = WriteWaiters()
        d = waiters.wait(4, 2, applied=0)
        waiters.on_apply(4, 3, None)
        self.assertEqual(self.failureResultOf(d, KMSError).value.message, NOT_APPLIED)

    def test_write_timeout_is_a_503(self):
        """A write that waits too long answers 503 "may or may not have been applied", not 500."""
        clock = task.Clock()
        waiters = WriteWaiters()
        d = waiters.wait(4, 2, applied=0)
        d.addTimeout(WRITE_TIMEOUT, clock, onTimeoutCancel=timed_out)
        clock.advance(WRITE_TIMEOUT)
        error = self.failureResultOf(d, KMSError).value
        self.assertEqual(error.status, 503)
        self.assertIn("may or may not have been applied", error.message)
        self.assertEqual(len(waiters), 0)
