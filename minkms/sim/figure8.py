"""
A scripted nemesis that steers a cluster into the situation of Raft's
figure 8, where counting replicas of an entry from an earlier term is not
enough to commit it (section 5.4.2).

Random faults almost never line this up, because it takes three leaders
in a row, each cut off at the right moment:

 1. The leader L1 of term t takes a client write at index i and is split,
    with as many voters as stay a minority, from the others; the entry
    reaches only its own side.
 2. The other side elects L2 (term t+1), which is isolated the moment it
    wins, so its no-op, at index i too, stays on L2 alone.  The others
    cannot elect anyone without L2.
 3. The network heals except for L2.  Only a node holding the term-t
    entry can win; it becomes L3 (term > t+1) and repairs the logs of the
    others, one Append at a time when the run's options say so.
 4. As soon as L3 has the term-t entry on a majority, but not its own
    no-op, L3 and the nodes that have its no-op (a minority) are cut off
    and L2 is let back: its later last term wins it the votes of all the
    others, and it overwrites index i.

A core that committed the term-t entry in step 4 has applied an entry
that is then replaced: the checker's State Machine Safety catches it.  A
correct core commits nothing in step 4, and the run goes on as any other.
The schedule reads leaders' replication progress, never their commit
index, so it steers the run without deciding whether the core is right.
"""

from typing import TYPE_CHECKING

from minkms.raft import quorum
from minkms.sim.history import PENDING

if TYPE_CHECKING:
    from minkms.sim.node import SimNode
    from minkms.sim.simulation import Simulation

SCHEDULE_CLIENT = -1
KEY = "f8"
GIVE_UP_MS = 2500

_SPLIT = "split"
_ISOLATE_L2 = "isolate-l2"
_AWAIT_L3 = "await-l3"
_WATCH_L3 = "watch-l3"
_COMEBACK = "comeback"


class Figure8:
    """
    One attempt at the figure-8 schedule during a run's fault phase; the
    simulation routes leader observations here while it is L{active}.
    """

    def __init__(self, sim: "Simulation") -> None:
        self.sim = sim
        self.step: str | None = None
        self._side_b: set[int] = set()
        self._l2: int | None = None
        self._l3: int | None = None
        self._l3_term = 0
        self._l3_noop = 0
        self._l3_commit = 0

    @property
    def active(self) -> bool:
        """The schedule owns the network: other faults wait."""
        return self.step is not None

    def start(self, tries: int = 10) -> None:
        """Split the current leader and a minority off, right after it takes a write."""
        sim = self.sim
        if sim.faults_over or self.active:
            return
        leader = sim.current_leader()
        voters = sorted(leader.core.config.voters) if leader is not None else []
        ready = (
            leader is not None and len(voters) >= 3 and leader.id in voters and all(sim.nodes[v].alive for v in voters)
        )
        if not ready:
            if tries > 1:
                sim.scheduler.after(sim.rng.randint(20, 100), self.start, tries - 1)
            return
        others = [v for v in voters if v != leader.id]
        minority = len(voters) - quorum.majority(len(voters))
        side_a = [leader.id, *sim.rng.sample(others, minority - 1)]
        self._side_b = set(voters) - set(side_a)
        op = sim.write_as_client(SCHEDULE_CLIENT, leader, KEY)
        if op.status != PENDING:
            return
        sim.network.heal()
        sim.network.split(side_a, [n for n in sim.nodes if n not in side_a])
        sim.stats["figure8"] += 1
        self.step = _SPLIT
        sim.scheduler.after(GIVE_UP_MS, self.finish)

    def on_leader(self, node: "SimNode", term: int, new: bool) -> None:
        """C{node} leads C{term} (C{new}: first seen leading it)."""
        if self.step == _SPLIT and new and node.id in self._side_b:
            self._l2 = node.id
            self.sim.network.isolate(node.id, list(self.sim.nodes))
            self.step = _ISOLATE_L2
            self.sim.scheduler.after(self.sim.rng.randint(0, 10), self._heal_but_l2)
        elif self.step == _AWAIT_L3 and new and node.id != self._l2:
            self._l3, self._l3_term = node.id, term
            self._l3_noop = node.core.log.last_index()
            self._l3_commit = node.core.log.committed
            self.step = _WATCH_L3
        elif self.step == _WATCH_L3 and node.id == self._l3:
            self._watch_l3(node, term)
        elif self.step == _WATCH_L3 and new:
            self.finish()
        elif self.step == _COMEBACK and new:
            if node.id == self._l2:
                self.sim.stats["figure8_overwrite"] += 1
            self.sim.scheduler.after(self.sim.rng.randint(50, 300), self.finish)

    def _heal_but_l2(self) -> None:
        if self.step != _ISOLATE_L2:
            return
        network = self.sim.network
        network.heal()
        network.isolate(self._l2, list(self.sim.nodes))
        self.step = _AWAIT_L3

    def _watch_l3(self, node: "SimNode", term: int) -> None:
        core = node.core
        if term != self._l3_term:
            self.finish()
            return
        progress = core.status().progress

        def match(voter: int) -> int:
            return progress[voter].match if voter in progress else 0

        held = quorum.committed_index(core.config.voters, match)
        if held >= self._l3_noop:
            self.finish()
        elif held > self._l3_commit:
            self.sim.stats["figure8_struck"] += 1
            with_noop = {node.id} | {v for v in core.config.voters if match(v) >= self._l3_noop}
            network = self.sim.network
            network.heal()
            network.split(sorted(with_noop), [n for n in self.sim.nodes if n not in with_noop])
            self.step = _COMEBACK

    def finish(self) -> None:
        """Give up or end the schedule: heal the network."""
        if self.step is not None:
            self.step = None
            self.sim.network.heal()
