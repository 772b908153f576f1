"""
One simulated server: the real Raft core driven the way the Twisted node
will drive it, over a simulated disk, network and clock.

The driver loop is split into three events so that crashes can fall
between them: C{_process} takes a Ready and writes it to the disk (not yet
durable); C{_synced} fsyncs it after a disk latency; C{_emit} then sends
the messages, applies committed entries, answers clients and advances the
core.  Ticks and incoming messages keep flowing into the core meanwhile.
"""

import random
from typing import TYPE_CHECKING

from minkms.raft.core import RaftCore, RaftOptions
from minkms.raft.errors import RaftError
from minkms.raft.messages import Message
from minkms.raft.ready import LEADER, Ready
from minkms.raft.types import DurableState
from minkms.sim.disk import SimDisk
from minkms.sim.history import FAIL, OK, UNKNOWN, WRITE, Operation
from minkms.sim.statemachine import StateMachine

if TYPE_CHECKING:
    from minkms.sim.simulation import Simulation


class SimNode:
    """
    A node process that can crash, restart and pause.

    @ivar incarnation: bumped at every start and crash; events of an
        earlier incarnation are ignored.
    @ivar alive: the process is running.
    @ivar retired: removed for good by the simulation (never restarted).
    """

    def __init__(
        self, sim: "Simulation", node_id: int, durable: DurableState, options: RaftOptions
    ) -> None:
        self.sim = sim
        self.id = node_id
        self.options = options
        self.disk = SimDisk(durable)
        self.core: RaftCore | None = None
        self.machine: StateMachine | None = None
        self.alive = False
        self.retired = False
        self.incarnation = 0
        self.busy = False
        self.process_scheduled = False
        self.paused_until = 0
        self.tick_ms = 10
        self.crashes = 0
        self.snapshots_installed = 0
        self._proposals: dict[int, tuple[int, Operation]] = {}
        self._reads: dict[bytes, Operation] = {}
        self._reads_waiting: list[tuple[int, Operation]] = []

    # -- life cycle -----------------------------------------------------

    def start(self) -> None:
        """Boot from the disk: restore the core and the state machine."""
        durable = self.disk.durable_state()
        rng = random.Random(self.sim.rng.getrandbits(64))
        self.core = RaftCore(self.id, durable, rng, self.options)
        self.machine = self.sim.kind.machine()
        if durable.snapshot is not None:
            self.machine.restore(durable.snapshot.data)
            self.sim.checker.on_restore(self.id, durable.snapshot.meta.index, self.machine.digest())
        self.alive = True
        self.busy = False
        self.process_scheduled = False
        self.incarnation += 1
        self.tick_ms = self.sim.rng.randint(9, 11)
        self.sim.scheduler.after(
            self.sim.rng.randint(0, self.tick_ms), self._tick, self.incarnation
        )
        self.schedule_process()

    def crash(self) -> None:
        """Kill the process: memory is gone, unsynced writes mostly too."""
        if not self.alive:
            return
        self.alive = False
        self.crashes += 1
        self.incarnation += 1
        self.disk.crash(self.sim.rng)
        self.core = None
        self.machine = None
        now = self.sim.scheduler.now
        for _, op in self._proposals.values():
            op.finish(UNKNOWN, now)
        for op in self._reads.values():
            op.finish(FAIL, now)
        for _, op in self._reads_waiting:
            op.finish(FAIL, now)
        self._proposals.clear()
        self._reads.clear()
        self._reads_waiting.clear()

    def pause(self, until: int) -> None:
        """Freeze the process (a long GC or SIGSTOP) until C{until}."""
        self.paused_until = max(self.paused_until, until)

    def _frozen(self, callback, *args) -> bool:
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
        self.core.tick()
        self._after_input()

    def receive(self, message: Message) -> None:
        """A message arrived from the network."""
        if not self.alive:
            return
        if self._frozen(self._receive_later, self.incarnation, message):
            return
        self.core.step(message)
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
        if self._frozen(self._later, self.incarnation, self.propose_write, op):
            return
        try:
            index = self.core.propose(self.sim.workload.encode(op, self.sim.scheduler.now))
        except RaftError:
            op.finish(FAIL, self.sim.scheduler.now)
            return
        op.index = index
        replaced = self._proposals.get(index)
        if replaced is not None:
            replaced[1].finish(UNKNOWN, self.sim.scheduler.now)
        self._proposals[index] = (self.core.term, op)
        self._after_input()

    def read(self, op: Operation) -> None:
        """A client read arrives: ask for a ReadIndex, serve after applying it."""
        if self._frozen(self._later, self.incarnation, self.read, op):
            return
        request_id = b"%d" % op.op_id
        try:
            self.core.read_index(request_id)
        except RaftError:
            op.finish(FAIL, self.sim.scheduler.now)
            return
        self._reads[request_id] = op
        self._after_input()

    def _after_input(self) -> None:
        core = self.core
        if core.role == LEADER:
            self.sim.observe_leader(self, core.term)
        self.schedule_process()

    # -- the driver loop ------------------------------------------------

    def schedule_process(self) -> None:
        """Run the driver loop soon (the core may have something ready)."""
        if not self.process_scheduled and not self.busy:
            self.process_scheduled = True
            self.sim.scheduler.after(0, self._process, self.incarnation)

    def _process(self, incarnation: int) -> None:
        if incarnation != self.incarnation:
            return
        if self._frozen(self._process, incarnation):
            return
        self.process_scheduled = False
        if self.busy or not self.core.has_ready():
            return
        ready = self.core.ready()
        self.disk.write_ready(ready)
        self.busy = True
        delay = self.sim.disk_delay() if ready.must_sync else 0
        self.sim.scheduler.after(delay, self._synced, incarnation, ready)

    def _synced(self, incarnation: int, ready: Ready) -> None:
        if incarnation != self.incarnation or self._frozen(self._synced, incarnation, ready):
            return
        if ready.must_sync:
            self.disk.sync()
        self.sim.scheduler.after(self.sim.rng.randint(0, 1), self._emit, incarnation, ready)

    def _emit(self, incarnation: int, ready: Ready) -> None:
        if incarnation != self.incarnation or self._frozen(self._emit, incarnation, ready):
            return
        for message in ready.messages:
            self.sim.network.send(message)
        if ready.snapshot is not None:
            self._install(ready)
        now = self.sim.scheduler.now
        for entry in ready.committed_entries:
            answer = self.machine.apply(entry)
            self.sim.checker.on_apply(self.id, entry, self.machine.digest())
            proposal = self._proposals.pop(entry.index, None)
            if proposal is not None:
                term, op = proposal
                if term == entry.term:
                    op.answer = answer
                op.finish(OK if term == entry.term else FAIL, now)
        for state in ready.read_states:
            op = self._reads.pop(state.request_id, None)
            if op is not None:
                self._reads_waiting.append((state.index, op))
        self._serve_reads()
        self.core.advance(ready)
        self.busy = False
        self._maybe_compact()
        self.schedule_process()

    def _install(self, ready: Ready) -> None:
        snapshot = ready.snapshot
        self.machine.restore(snapshot.data)
        self.snapshots_installed += 1
        self.sim.checker.on_restore(self.id, snapshot.meta.index, self.machine.digest())
        now = self.sim.scheduler.now
        for index in [i for i in self._proposals if i <= snapshot.meta.index]:
            _, op = self._proposals.pop(index)
            op.finish(OK if op.op_id in self.machine.applied_ops else FAIL, now)

    def _serve_reads(self) -> None:
        if not self._reads_waiting:
            return
        applied = self.machine.applied_index
        still_waiting = []
        now = self.sim.scheduler.now
        for index, op in self._reads_waiting:
            if index <= applied:
                op.index = applied
                op.finish(OK, now, self.machine.read(op.key))
            else:
                still_waiting.append((index, op))
        self._reads_waiting = still_waiting

    def _maybe_compact(self) -> None:
        applied = self.machine.applied_index
        if applied - self.core.log.offset >= self.sim.compact_every:
            snapshot = self.core.compact(applied, self.machine.snapshot())
            self.disk.compact(snapshot)
