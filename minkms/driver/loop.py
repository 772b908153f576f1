"""
The Ready loop over injected ports.

Ports (duck-typed; the node's are in L{minkms.server.ports}, the
simulator's in L{minkms.sim.node}):

 - C{storage.persist(ready) -> Deferred}: write what a L{Ready} asks
   (snapshot, entries, hard state), fsynced if C{ready.must_sync}; fires
   once durable.  C{storage.save_snapshot(snapshot) -> Deferred}: a
   compaction snapshot.
 - C{transport.send(message)}; C{transport.flush()}: send now what the
   calls since the last flush wrote (the driver flushes after each batch).
 - C{machine.apply(entry) -> result}, C{machine.restore(snapshot)},
   C{machine.dump() -> Deferred}: fires with the bytes of the state as
   applied at the call, possibly later (the node serializes off the
   reactor thread, so that a large state does not stall heartbeats).
 - C{clock() -> float}: monotonic seconds (the one the core's leases use).

Per Ready: send what needs nothing persisted (the leader's appends and
heartbeats, L{Ready.send_first}), persist, then send the rest, install a
snapshot, apply committed entries, settle writes and reads, advance.  A
Ready that needs no fsync (a new commit index) is applied, and the
answers its writes got are flushed, before its messages (the followers'
commit notices) are sent.  Then the hooks run (C{on_ready(ready)}: links
and the like) and compaction is considered.  While a Ready is being
persisted the leader's heartbeats and the like still go out at once
(L{RaftCore.early_messages}): peer traffic never waits for the disk.
"""

from collections.abc import Callable

from twisted.internet import defer
from twisted.python.failure import Failure

from minkms.driver.reads import NO_LEADER_REFUSED, REFUSE, SERVE, PendingReads
from minkms.driver.waiters import WriteWaiters
from minkms.errors import unavailable
from minkms.raft.errors import NotLeader
from minkms.raft.ready import Ready
from minkms.raft.types import NO_NODE

ENTRY_BYTES = 64
"""What an applied entry counts beyond its data when weighing the log against the last snapshot."""


class RaftDriver:
    """
    Drives one L{RaftCore}: the only place where its Readys are persisted,
    sent and applied, on the node and in the simulator alike.

    @ivar applied: the index the state machine has applied.
    @ivar failed: why the driver stopped for good (storage failed), or None.
    """

    def __init__(
        self,
        core,
        storage,
        transport,
        machine,
        clock: Callable[[], float],
        applied: int,
        reads_without_leader: str = SERVE,
        compact_every: int = 1000,
        on_ready: Callable[[Ready], None] | None = None,
        on_failure: Callable[[object], None] | None = None,
        warn: Callable[[str], None] | None = None,
        soon: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        if reads_without_leader not in (SERVE, REFUSE):
            raise ValueError(f"reads_without_leader must be {SERVE} or {REFUSE}")
        self.core = core
        self.storage = storage
        self.transport = transport
        self.machine = machine
        self.clock = clock
        self.applied = applied
        self.reads_without_leader = reads_without_leader
        self.compact_every = compact_every
        self.writes = WriteWaiters()
        self.reads = PendingReads()
        self.failed: str | None = None
        self.paused = False
        self._on_ready = on_ready or (lambda ready: None)
        self._on_failure = on_failure or (lambda failure: None)
        self._warn = warn or (lambda text: None)
        self._soon = soon
        self._kick_due = False
        self._busy = False
        self._stopped = False
        self._serving_unleased = False
        self._idle: list[defer.Deferred] = []
        self._leader = core.leader
        snapshot = core.log.snapshot
        self._snapshot_bytes = len(snapshot.data) if snapshot is not None else 0
        self._log_bytes = 0
        self._dumping = False
        self._dumped: tuple[int, bytes] | None = None

    # -- inputs ---------------------------------------------------------

    def tick(self) -> None:
        """One tick of logical time."""
        if self._accepts_input():
            self.core.tick()
        self.kick()

    def step(self, message) -> None:
        """A message from a peer."""
        if self._accepts_input():
            self.core.step(message)
        self._kick_soon()

    def propose(self, data: bytes) -> tuple[int, int]:
        """
        Propose a command here (the leader); returns (index, term).
        Raises L{NotLeader} or another L{RaftError}.
        """
        index = self.core.propose(data)
        term = self.core.term
        self._kick_soon()
        return index, term

    def _kick_soon(self) -> None:
        """
        L{kick} once the inputs that arrived together are in: with a
        C{soon} port (the reactor's next turn), every proposal and message
        of one turn goes into one Ready (one write and fsync, one Append
        per follower) instead of the first going alone; without one, now.
        """
        if self._soon is None:
            self.kick()
        elif not self._kick_due:
            self._kick_due = True
            self._soon(self._due_kick)

    def _due_kick(self) -> None:
        self._kick_due = False
        self.kick()

    def wait_applied(self, index: int, term: int) -> defer.Deferred:
        """
        Fires with the apply result of the write placed at (C{index},
        C{term}) once this node applied it (and so may acknowledge it), or
        fails with 503 saying whether it was applied.  A write placed just
        before the storage failed (the failure can come within C{propose})
        is answered at once, not at its timeout.
        """
        if self.failed is not None:
            return defer.fail(unavailable(self.failed))
        return self.writes.wait(index, term, self.applied)

    def read_barrier(self) -> defer.Deferred | None:
        """
        None if a read may be answered from the local state now; else a
        Deferred that fires (with True when served without a lease or a
        leader) once it may, or fails with 503.
        """
        self._check_usable()
        core = self.core
        index = core.lease_read_index()
        if index is not None:
            self._serving_unleased = False
            if self.applied >= index:
                return None
            return self.reads.wait_index(index, leased=True)
        if core.leader != NO_NODE:
            request_id = self.reads.request_id()
            try:
                core.read_index(request_id)
            except NotLeader:
                pass
            else:
                d = self.reads.wait_confirmation(request_id)
                self.kick()
                return d
        return self._read_without_leader()

    def fresh_now(self) -> bool:
        """Whether a read could be answered from the local state right now, under a lease."""
        index = self.core.lease_read_index()
        return index is not None and self.applied >= index

    def _read_without_leader(self) -> defer.Deferred:
        if self.reads_without_leader == REFUSE:
            raise unavailable(NO_LEADER_REFUSED)
        if self.core.id not in self.core.config.members:
            raise unavailable("no leader: this node is not a member of a cluster yet")
        if not self._serving_unleased:
            self._serving_unleased = True
            self._warn("serving reads without a leader or a read lease: they may miss recent writes")
        return self.reads.wait_index(self.core.exposable(), unleased=True)

    def _check_usable(self) -> None:
        if self.failed is not None:
            raise unavailable(self.failed)
        if self._stopped:
            raise unavailable("node is shutting down")
        if self.paused:
            raise unavailable("node is joining a cluster")

    # -- the loop -------------------------------------------------------

    def _accepts_input(self) -> bool:
        return self.failed is None and not self._stopped and not self.paused

    def kick(self) -> None:
        """Process whatever the core has ready, then settle waiters."""
        if self._busy and self._accepts_input():
            self._send(self.core.early_messages())
        while not self._busy and self._accepts_input() and self.core.has_ready():
            self._busy = True
            ready = self.core.ready()
            if ready.must_sync:
                self._send(ready.send_first)
            d = self.storage.persist(ready)
            if not d.called:
                d.addCallbacks(self._resume, self._fail, callbackArgs=(ready,))
                d.addErrback(self._fail)
                return
            outcome: list = []
            d.addBoth(outcome.append)
            if isinstance(outcome[0], Failure):
                self._fail(outcome[0])
                return
            self._complete(ready)
        self._settle()
        if not self._busy:
            self._fire_idle()

    def when_idle(self) -> defer.Deferred:
        """Fires once no Ready is being persisted and the core has none ready (or the loop stopped)."""
        d = defer.Deferred()
        self._idle.append(d)
        self.kick()
        return d

    def _fire_idle(self) -> None:
        if self.core.has_ready() and self._accepts_input():
            return
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    def _resume(self, _, ready: Ready) -> None:
        if self._stopped or self.failed is not None:
            return
        self._complete(ready)
        self.kick()

    def _send(self, messages) -> None:
        if messages:
            for message in messages:
                self.transport.send(message)
            self.transport.flush()

    def _complete(self, ready: Ready) -> None:
        if ready.must_sync:
            self._send(ready.messages)
        if ready.snapshot is not None:
            meta = ready.snapshot.meta
            self.machine.restore(ready.snapshot)
            self.applied = meta.index
            self._snapshot_bytes, self._log_bytes = len(ready.snapshot.data), 0
            self.writes.on_snapshot(meta.index, meta.term)
        for entry in ready.committed_entries:
            self._log_bytes += len(entry.data) + ENTRY_BYTES
            result = self.machine.apply(entry)
            self.applied = entry.index
            self.writes.on_apply(entry.index, entry.term, result)
        for state in ready.read_states:
            self.reads.confirmed(state.request_id, state.index)
        if not ready.must_sync:
            self.transport.flush()
            self._send(ready.send_first + ready.messages)
        self.core.advance(ready)
        self._busy = False
        self._on_ready(ready)
        self._compact_to_dump()
        self._maybe_compact()

    def _settle(self) -> None:
        core = self.core
        if core.leader != self._leader:
            self._leader = core.leader
            self._ask_again()
        if core.leader == NO_NODE and len(self.reads):
            self.reads.without_leader(self.reads_without_leader, core.exposable())
        self.reads.release(self.applied, core.log.last_index())

    def _ask_again(self) -> None:
        """The leader changed: ReadIndex requests sent to the old one go to the new one."""
        if self.core.leader == NO_NODE:
            return
        for request_id in self.reads.unconfirmed():
            try:
                self.core.read_index(request_id)
            except NotLeader:
                return

    def _maybe_compact(self) -> None:
        """
        Start a snapshot once C{compact_every} entries were applied since the
        last one and they hold at least as many bytes as it did: a snapshot
        costs time in proportion to the whole state, so a large state is
        snapshotted less often and the cost per write stays flat.  The state
        is dumped as applied now; the log is compacted to it when the dump
        is done (L{_compact_to_dump}), one dump at a time.
        """
        if self._dumping or self.applied - self.core.log.offset < self.compact_every:
            return
        if self._log_bytes < self._snapshot_bytes:
            return
        self._dumping = True
        self._log_bytes = 0
        d = self.machine.dump()
        d.addCallback(self._dump_done, self.applied)
        d.addErrback(self._fail)

    def _dump_done(self, data: bytes, index: int) -> None:
        self._dumping = False
        self._snapshot_bytes = len(data)
        self._dumped = (index, data)
        if not self._busy:
            self._compact_to_dump()

    def _compact_to_dump(self) -> None:
        """
        Compact the log to the finished dump, between Readys.  The dump is
        dropped if a snapshot installed from the leader meanwhile covers
        it, or if the loop is stopped or paused: the node may be rewriting
        its volume (a membership edit, a join) under the driver.
        """
        if self._dumped is None:
            return
        (index, data), self._dumped = self._dumped, None
        if not self._accepts_input() or index <= self.core.log.offset:
            return
        snapshot = self.core.compact(index, data)
        self.storage.save_snapshot(snapshot).addErrback(self._fail)

    def _fail(self, failure) -> None:
        if self.failed is not None or self._stopped:
            return
        self.failed = self._on_failure(failure) or failure.getErrorMessage()
        self._busy = False
        self.writes.fail_all(self.failed)
        self.reads.fail_all(self.failed)
        self._fire_idle()

    # -- lifecycle ------------------------------------------------------

    def stop(self, reason: str = "node is shutting down") -> None:
        """Stop for good; answer every waiting write and read with 503."""
        self._stopped = True
        self.writes.fail_all(reason)
        self.reads.fail_all(reason)

    @property
    def stopped(self) -> bool:
        """Stopped for good (L{stop}): nothing more is persisted, sent or applied."""
        return self._stopped

    @property
    def busy(self) -> bool:
        """A Ready is being persisted."""
        return self._busy
