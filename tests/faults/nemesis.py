"""
The nemesis: a seeded schedule of faults against a L{FaultCluster}, each
applied, held, healed, and followed by a wait until every node is back.
Every fault is a phase with a start and an end, so the report can say how
available writes were during each kind.
"""

import random
import time

import attrs

from tests.faults.cluster import sleep

KINDS = (
    "kill",
    "kill_leader",
    "pause",
    "pause_leader",
    "quorum_loss",
    "crash_all",
    "partition_leader",
    "partition_link",
    "disk_full",
    "restart",
)


@attrs.define
class Settings:
    """
    How long faults last, in seconds.  C{pause} outlasts the election
    timeout and a read lease; C{quorum_loss} outlasts the server's write
    timeout (15 s), so that writes waiting on the isolated leader time out.
    """

    pause: float = 3.0
    quorum_loss: float = 18.0
    down: tuple[float, float] = (1.0, 4.0)
    partition: tuple[float, float] = (2.0, 6.0)
    disk_full: tuple[float, float] = (2.0, 4.0)
    quiet: tuple[float, float] = (1.0, 3.0)


@attrs.define
class Phase:
    """One fault: its kind, the nodes it hit, and when (until every node answered again)."""

    kind: str
    nodes: list[str]
    start: int
    end: int | None = None


class Nemesis:
    """Runs faults of C{kinds} (shuffled rounds, so each occurs) until the deadline."""

    def __init__(self, cluster, seed: int, kinds=KINDS, settings: Settings | None = None) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.kinds = [k for k in kinds if k != "disk_full" or cluster.disk is not None]
        self.settings = settings or Settings()
        self.phases: list[Phase] = []
        self.unexpected: list[str] = []
        self.disk_faults: set[str] = set()

    async def run(self, seconds: float, rounds: int | None = None) -> None:
        """Apply faults until C{seconds} have passed (or C{rounds} faults ran)."""
        deadline = time.monotonic() + seconds
        bag: list[str] = []
        done = 0
        while time.monotonic() < deadline and (rounds is None or done < rounds):
            await sleep(self.rng.uniform(*self.settings.quiet))
            if not bag:
                bag = list(self.kinds)
                self.rng.shuffle(bag)
            kind = bag.pop()
            phase = Phase(kind, [], time.monotonic_ns())
            self.phases.append(phase)
            await getattr(self, "_" + kind)(phase)
            await self.recover()
            phase.end = time.monotonic_ns()
            done += 1

    async def recover(self) -> None:
        """Heal every link, resume and restart every node, wait until all answer."""
        self.cluster.heal()
        for node in self.cluster.nodes:
            if node.paused:
                node.resume()
            if not node.running():
                if not node.expected_down and node.name not in self.disk_faults:
                    self.unexpected.append(
                        f"{node.name} exited with status {node.process.returncode} without the nemesis killing it"
                    )
                node.expected_down = False
                node.start()
        for node in self.cluster.nodes:
            if not node.running():
                continue
            try:
                await self.cluster.wait_up(node)
            except AssertionError as e:
                self.unexpected.append(f"{node.name} did not come back: {str(e).splitlines()[0]}")

    async def _target(self, leader: bool):
        nodes = self.cluster.nodes
        if leader:
            found = await self.cluster.leader()
            if found is not None:
                return found
        return self.rng.choice(nodes)

    def _kill_now(self, node) -> None:
        node.expected_down = True
        if node.paused:
            node.resume()
        node.kill()

    async def _down_and_up(self, phase, nodes, seconds) -> None:
        phase.nodes = [n.name for n in nodes]
        for node in nodes:
            self._kill_now(node)
        await sleep(seconds)
        for node in nodes:
            node.start()

    async def _kill(self, phase, leader=False):
        node = await self._target(leader)
        await self._down_and_up(phase, [node], self.rng.uniform(*self.settings.down))

    _kill_one = _kill

    async def _kill_leader(self, phase):
        await self._kill_one(phase, leader=True)

    async def _quorum_loss(self, phase):
        """The leader's followers, once a write to the leader is in flight (waiting up to 10 s)."""
        leader = await self._target(True)
        for _ in range(1000):
            if self.cluster.writes_in_flight[leader.name]:
                break
            await sleep(0.01)
        others = [n for n in self.cluster.nodes if n is not leader]
        victims = others[: (len(self.cluster.nodes) + 1) // 2]
        await self._down_and_up(phase, victims, self.settings.quorum_loss)

    async def _crash_all(self, phase):
        """Every node at once, right after a write was acknowledged (up to 10 s later)."""
        since = time.monotonic_ns()
        for _ in range(1000):
            if self.cluster.last_ack > since:
                break
            await sleep(0.01)
        await self._down_and_up(phase, list(self.cluster.nodes), self.rng.uniform(0.5, 2.0))

    async def _pause(self, phase, leader=False):
        node = await self._target(leader)
        phase.nodes = [node.name]
        node.pause()
        await sleep(self.settings.pause)
        node.resume()

    _pause_one = _pause

    async def _pause_leader(self, phase):
        await self._pause_one(phase, leader=True)

    async def _partition_leader(self, phase):
        leader = await self._target(True)
        phase.nodes = [leader.name]
        for other in self.cluster.nodes:
            if other is not leader:
                self.cluster.cut(leader, other)
        await sleep(self.rng.uniform(*self.settings.partition))
        self.cluster.heal()

    async def _partition_link(self, phase):
        leader = await self._target(True)
        other = self.rng.choice([n for n in self.cluster.nodes if n is not leader])
        phase.nodes = [leader.name, other.name]
        self.cluster.cut(leader, other)
        await sleep(self.rng.uniform(*self.settings.partition))
        self.cluster.heal()

    async def _disk_full(self, phase):
        node = self.cluster.nodes[-1]
        phase.nodes = [node.name]
        self.disk_faults.add(node.name)
        self.cluster.disk.fill()
        await sleep(self.rng.uniform(*self.settings.disk_full))
        self.cluster.disk.free()
        if node.running():
            node.expected_down = True
            await node.terminate()
        node.start()

    async def _restart(self, phase):
        node = self.rng.choice(self.cluster.nodes)
        phase.nodes = [node.name]
        node.expected_down = True
        await node.terminate()
        node.start()
