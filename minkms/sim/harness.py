"""
A hand-driven in-memory cluster for unit tests of the Raft core.

Nothing happens by itself: tests tick nodes, process their Ready batches
(persist to a L{SimDisk}, collect messages, apply entries) and deliver the
collected messages, optionally dropping some or cutting links, the way
etcd-io/raft's paper tests drive their C{network}.
"""

import random
from collections.abc import Callable, Iterable

from minkms.raft.config import ClusterConfig
from minkms.raft.core import RaftCore, RaftOptions, bootstrap_state
from minkms.raft.messages import Message
from minkms.raft.ready import ReadState
from minkms.raft.types import DurableState, Entry
from minkms.sim.disk import SimDisk


def cluster_config(voters: Iterable[int], learners: Iterable[int] = ()) -> ClusterConfig:
    """A configuration with made-up addresses C{n<id>:7373}."""
    voters, learners = set(voters), set(learners)
    members = voters | learners
    return ClusterConfig(
        voters=voters,
        learners=learners,
        addresses={n: f"n{n}:7373" for n in members},
        next_id=max(members) + 1,
    )


class MemoryCluster:
    """
    Cores joined by an explicit outbox.

    @ivar outbox: messages sent and not yet delivered, in order.
    @ivar applied: per node, every entry its state machine applied.
    @ivar read_states: per node, every read state it produced.
    @ivar snapshots: per node, the snapshots it installed.
    """

    def __init__(
        self,
        voters: Iterable[int],
        options: RaftOptions = RaftOptions(),
        seed: int = 0,
        learners: Iterable[int] = (),
        clock=None,
    ) -> None:
        self.options = options
        self.clock = clock
        self.config = cluster_config(voters, learners)
        self._seed = seed
        self.disks: dict[int, SimDisk] = {}
        self.cores: dict[int, RaftCore] = {}
        self.outbox: list[Message] = []
        self.applied: dict[int, list[Entry]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.snapshots: dict[int, list] = {}
        self.cut: set[tuple[int, int]] = set()
        for node in sorted(self.config.members):
            self.add_node(node, bootstrap_state(self.config))

    def add_node(self, node: int, durable: DurableState = DurableState()) -> RaftCore:
        """Start a node from C{durable} (an empty state: a node about to join)."""
        self.disks[node] = SimDisk(durable)
        return self.restart(node)

    def restart(self, node: int) -> RaftCore:
        """Replace a node's core by one restored from its disk."""
        core = RaftCore(
            node,
            self.disks[node].durable_state(),
            random.Random(self._seed * 1000 + node),
            self.options,
            **({} if self.clock is None else {"clock": self.clock}),
        )
        self.cores[node] = core
        self.applied.setdefault(node, [])
        self.read_states.setdefault(node, [])
        self.snapshots.setdefault(node, [])
        return core

    def process(self, *nodes: int) -> None:
        """Run the driver loop of C{nodes} (all by default) until each has nothing ready."""
        for node in nodes or sorted(self.cores):
            core = self.cores[node]
            while core.has_ready():
                ready = core.ready()
                self.outbox.extend(ready.send_first)
                disk = self.disks[node]
                disk.write_ready(ready)
                disk.sync()
                self.outbox.extend(ready.messages)
                if ready.snapshot is not None:
                    self.snapshots[node].append(ready.snapshot)
                self.applied[node].extend(ready.committed_entries)
                self.read_states[node].extend(ready.read_states)
                core.advance(ready)

    def take(self, predicate: Callable[[Message], bool] = lambda m: True) -> list[Message]:
        """Remove and return the outbox messages matching C{predicate}."""
        taken = [m for m in self.outbox if predicate(m)]
        self.outbox = [m for m in self.outbox if not predicate(m)]
        return taken

    def deliver(self, drop: Callable[[Message], bool] = lambda m: False) -> int:
        """Deliver every queued message (except dropped or cut ones); returns how many."""
        messages, self.outbox = self.outbox, []
        delivered = 0
        for message in messages:
            if drop(message) or (message.src, message.dst) in self.cut:
                continue
            core = self.cores.get(message.dst)
            if core is not None:
                core.step(message)
                delivered += 1
        return delivered

    def stabilize(self, rounds: int = 100, drop: Callable[[Message], bool] = lambda m: False) -> None:
        """Process and deliver until no message is left."""
        for _ in range(rounds):
            self.process()
            if not self.outbox:
                return
            self.deliver(drop)
        raise AssertionError("cluster did not stabilize")

    def isolate(self, node: int) -> None:
        """Cut every link to and from C{node}."""
        for other in self.cores:
            if other != node:
                self.cut.add((node, other))
                self.cut.add((other, node))

    def heal(self) -> None:
        """Restore every link."""
        self.cut.clear()

    def elect(self, node: int) -> RaftCore:
        """Make C{node} campaign and run the cluster until things settle."""
        self.cores[node].campaign()
        self.stabilize()
        return self.cores[node]

    def tick(self, node: int, ticks: int = 1) -> None:
        """Tick one node C{ticks} times."""
        for _ in range(ticks):
            self.cores[node].tick()

    def tick_all(self, ticks: int = 1) -> None:
        """Tick every node C{ticks} times, processing and delivering in between."""
        for _ in range(ticks):
            for core in self.cores.values():
                core.tick()
            self.process()
            self.deliver()

    def leaders(self) -> list[int]:
        """The nodes that believe they lead."""
        return [n for n, c in sorted(self.cores.items()) if c.role == "Leader"]
