"""
One simulated server: the real Raft core driven by the production driver
(L{minkms.driver.RaftDriver}), with the same read rule and the same write
acknowledgement rule as the Twisted node, over a simulated disk, network
and clock.

The simulator supplies the ports: a disk whose fsync takes a while (a
crash between write and fsync loses data), the simulated network, the
state machine with the checker watching every apply, and a per-node clock
that runs at its own rate within the allowed drift.
"""

import random
from typing import TYPE_CHECKING

from twisted.internet import defer

from minkms.driver import SERVE, RaftDriver
from minkms.driver.waiters import NOT_APPLIED
from minkms.errors import KMSError
from minkms.raft.core import RaftCore, RaftOptions
from minkms.raft.errors import RaftError
from minkms.raft.messages import Message
from minkms.raft.ready import LEADER, Ready
from minkms.raft.types import DurableState, Snapshot
from minkms.sim.disk import SimDisk
from minkms.sim.history import FAIL, OK, PENDING, UNKNOWN, WRITE, Operation

if TYPE_CHECKING:
    from minkms.sim.simulation import Simulation


class _Disk:
    """
    The storage port, as the server's: a Ready without an fsync goes on at
    once; one with an fsync is synced after a simulated latency, or before
    C{persist} returns when the disk is fast and there is no snapshot.
    """

    def __init__(self, node: "SimNode", incarnation: int) -> None:
        self._node = node
        self._incarnation = incarnation

    def persist(self, ready: Ready) -> defer.Deferred:
        node = self._node
        node.disk.write_ready(ready)
        if not ready.must_sync:
            return defer.succeed(None)
        delay = node.sim.disk_delay()
        if delay == 0 and ready.snapshot is None:
            # A fast disk and a small batch: written and fsynced before
            # persist returns, as the server's event loop does
            # (minkms.storage.inline).
            node.disk.sync()
            return defer.succeed(None)
        d = defer.Deferred()
        node.sim.scheduler.after(delay, self._synced, ready, d)
        return d

    def _synced(self, ready: Ready, d: defer.Deferred) -> None:
        node = self._node
        if self._incarnation != node.incarnation or node.frozen(self._synced, ready, d):
            return
        node.disk.sync()
        node.sim.scheduler.after(node.sim.rng.randint(0, 1), node.fire, self._incarnation, d, None)

    def save_snapshot(self, snapshot: Snapshot) -> defer.Deferred:
        self._node.disk.compact(snapshot)
        return defer.succeed(None)


class _Machine:
    """
    The state-machine port, reporting every apply and restore to the
    checker.  A dump is taken at the call and handed back after a simulated
    delay, as the node's serialization thread does, so that entries are
    applied and snapshots installed while it is under way.
    """

    def __init__(self, node: "SimNode", machine, incarnation: int) -> None:
        self._node = node
        self._incarnation = incarnation
        self.machine = machine

    def apply(self, entry):
        answer = self.machine.apply(entry)
        self._node.sim.checker.on_apply(self._node.id, entry, self.machine.digest())
        return answer

    def restore(self, snapshot: Snapshot) -> None:
        self.machine.restore(snapshot.data)
        self._node.snapshots_installed += 1
        self._node.sim.checker.on_restore(self._node.id, snapshot.meta.index, self.machine.digest())

    def dump(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        node = self._node
        node.sim.scheduler.after(node.sim.disk_delay(), node.fire, self._incarnation, d, self.machine.snapshot())
        return d


class _Network:
    """The transport port."""

    def __init__(self, sim: "Simulation") -> None:
        self._sim = sim

    def send(self, message: Message) -> None:
        self._sim.network.send(message)

    def flush(self) -> None:
        """Nothing to do: a simulated message is on the network once sent."""


class SimNode:
    """
    A node process that can crash, restart and pause.

    @ivar incarnation: bumped at every start and crash; events of an
        earlier incarnation are ignored.
    @ivar alive: the process is running.
    @ivar retired: removed for good by the simulation (never restarted).
    @ivar clock_rate: how fast this node's clock runs against virtual time.
    """

    def __init__(
        self,
        sim: "Simulation",
        node_id: int,
        durable: DurableState,
        options: RaftOptions,
        reads_without_leader: str = SERVE,
    ) -> None:
        self.sim = sim
        self.id = node_id
        self.options = options
        self.reads_without_leader = reads_without_leader
        self.disk = SimDisk(durable)
        self.core: RaftCore | None = None
        self.machine = None
        self.driver: RaftDriver | None = None
        self.alive = False
        self.retired = False
        self.incarnation = 0
        self.paused_until = 0
        self.tick_ms = 10
        self.crashes = 0
        self.snapshots_installed = 0
        self.clock_rate = 1 + sim.rng.random() * options.clock_drift
        self._clock_offset = sim.rng.randint(0, 10**6)
        self._pending: dict[int, Operation] = {}
        self.driver_failure = None

    def clock(self) -> float:
        """This node's monotonic clock, in seconds."""
        return (self._clock_offset + self.sim.scheduler.now * self.clock_rate) / 1000.0

    # -- life cycle -----------------------------------------------------

    def start(self) -> None:
        """Boot from the disk: restore the core and the state machine."""
        durable = self.disk.durable_state()
        rng = random.Random(self.sim.rng.getrandbits(64))
        self.incarnation += 1
        self.core = RaftCore(self.id, durable, rng, self.options, clock=self.clock)
        self.machine = self.sim.kind.machine()
        applied = 0
        if durable.snapshot is not None:
            self.machine.restore(durable.snapshot.data)
            applied = durable.snapshot.meta.index
            self.sim.checker.on_restore(self.id, applied, self.machine.digest())
        self.driver = RaftDriver(
            self.core,
            _Disk(self, self.incarnation),
            _Network(self.sim),
            _Machine(self, self.machine, self.incarnation),
            self.clock,
            applied,
            reads_without_leader=self.reads_without_leader,
            compact_every=self.sim.compact_every,
            on_failure=self._driver_failed,
            soon=self._soon,
        )
        self.alive = True
        self.tick_ms = self.sim.rng.randint(9, 11)
        self.sim.scheduler.after(self.sim.rng.randint(0, self.tick_ms), self._tick, self.incarnation)
        self.schedule_process()

    def crash(self) -> None:
        """Kill the process: memory is gone, unsynced writes mostly too."""
        if not self.alive:
            return
        self.alive = False
        self.crashes += 1
        self.incarnation += 1
        self.disk.crash(self.sim.rng)
        now = self.sim.scheduler.now
        for op in self._pending.values():
            op.finish(UNKNOWN if op.kind == WRITE else FAIL, now)
        self._pending.clear()
        self.driver.stop("crashed")
        self.driver = None
        self.core = None
        self.machine = None

    def _driver_failed(self, failure) -> str:
        """A check failed inside the driver's loop: the simulation raises it (L{fire})."""
        self.driver_failure = failure
        return failure.getErrorMessage()

    def pause(self, until: int) -> None:
        """Freeze the process (a long GC or SIGSTOP) until C{until}."""
        self.paused_until = max(self.paused_until, until)

    def fire(self, incarnation: int, d: defer.Deferred, result) -> None:
        """
        Fire a port's Deferred for the driver of C{incarnation}: never if
        the node crashed since, later if it is paused; then raise a check
        that failed inside the driver's loop (L{_driver_failed}).
        """
        if incarnation != self.incarnation or self.frozen(self.fire, incarnation, d, result):
            return
        d.callback(result)
        failure, self.driver_failure = self.driver_failure, None
        if failure is not None:
            failure.raiseException()

    def frozen(self, callback, *args) -> bool:
        """If paused, run C{callback(*args)} when the pause ends and say so."""
        if self.sim.scheduler.now < self.paused_until:
            self.sim.scheduler.at(self.paused_until, callback, *args)
            return True
        return False

    # -- inputs ---------------------------------------------------------

    def _tick(self, incarnation: int) -> None:
        if incarnation != self.incarnation:
            return
        self.sim.scheduler.after(self.tick_ms, self._tick, incarnation)
        if self.sim.scheduler.now < self.paused_until:
            return
        self.driver.tick()
        self._after_input()

    def receive(self, message: Message) -> None:
        """A message arrived from the network."""
        if not self.alive:
            return
        if self.frozen(self._receive_later, self.incarnation, message):
            return
        self.driver.step(message)
        self._after_input()

    def _receive_later(self, incarnation: int, message: Message) -> None:
        if incarnation == self.incarnation:
            self.receive(message)

    def _later(self, incarnation: int, request, op: Operation) -> None:
        if incarnation != self.incarnation:
            op.finish(UNKNOWN if op.kind == WRITE else FAIL, self.sim.scheduler.now)
        else:
            request(op)

    def propose_write(self, op: Operation) -> None:
        """A client write arrives; it fails at once unless this node leads."""
        if self.frozen(self._later, self.incarnation, self.propose_write, op):
            return
        try:
            index, term = self.driver.propose(self.sim.workload.encode(op, self.sim.scheduler.now))
        except RaftError:
            op.finish(FAIL, self.sim.scheduler.now)
            return
        op.index = index
        self._pending[op.op_id] = op
        d = self.driver.wait_applied(index, term)
        d.addCallbacks(self._written, self._not_written, callbackArgs=(op,), errbackArgs=(op,))
        self._after_input()

    def _written(self, answer, op: Operation) -> None:
        self._pending.pop(op.op_id, None)
        if op.status == PENDING:
            op.answer = answer
        op.finish(OK, self.sim.scheduler.now)

    def _not_written(self, failure, op: Operation) -> None:
        self._pending.pop(op.op_id, None)
        failure.trap(KMSError)
        definite = failure.value.message == NOT_APPLIED
        op.finish(FAIL if definite else UNKNOWN, self.sim.scheduler.now)

    def read(self, op: Operation) -> None:
        """A client read arrives: served by the production read rule."""
        if self.frozen(self._later, self.incarnation, self.read, op):
            return
        try:
            barrier = self.driver.read_barrier()
        except KMSError:
            op.finish(FAIL, self.sim.scheduler.now)
            return
        if barrier is None:
            self._serve(False, op)
        else:
            self._pending[op.op_id] = op
            barrier.addCallbacks(self._serve, self._read_failed, callbackArgs=(op,), errbackArgs=(op,))
        self._after_input()

    def _serve(self, unleased: bool, op: Operation) -> None:
        self._pending.pop(op.op_id, None)
        if op.status != PENDING:
            return
        op.index = self.machine.applied_index
        op.unleased = bool(unleased)
        op.finish(OK, self.sim.scheduler.now, self.machine.read(op.key))

    def _read_failed(self, failure, op: Operation) -> None:
        self._pending.pop(op.op_id, None)
        failure.trap(KMSError)
        op.finish(FAIL, self.sim.scheduler.now)

    def _after_input(self) -> None:
        core = self.core
        if core is not None and core.role == LEADER:
            self.sim.observe_leader(self, core.term)

    # -- the driver loop ------------------------------------------------

    def _soon(self, call) -> None:
        """The driver's next-turn port: C{call} after what is due now, unless the node crashed."""
        self.sim.scheduler.after(0, self._run_soon, self.incarnation, call)

    def _run_soon(self, incarnation: int, call) -> None:
        if incarnation != self.incarnation or self.frozen(self._run_soon, incarnation, call):
            return
        call()
        self._after_input()

    def schedule_process(self) -> None:
        """Let the driver process what the core has ready (after a direct core call)."""
        self._soon(self.driver.kick)
