"""
One seeded simulation run of a whole cluster.

A run has two phases.  During the fault phase clients write and read
while a nemesis crashes nodes (losing unsynced writes), pauses them,
partitions the network (symmetric, one-way, bridges), drops, delays and
duplicates messages, changes membership (add a learner, promote it,
remove a learner or a voter, the leader included) and transfers
leadership; small compaction thresholds force InstallSnapshot on lagging
followers.  Some runs also play the figure-8 schedule
(L{minkms.sim.figure8}), which holds the other faults back while it
runs.  Nodes run the register store or the real KMS state machine
(C{--machine}).  Then faults stop: the network heals, every member
restarts, and the cluster must elect a leader, commit a barrier write and
converge on every member, in byte-identical states, within
C{liveness_ms} of virtual time.

Everything random comes from one C{random.Random} seeded by (seed, nodes),
so C{python -m minkms.sim --seed S --nodes N [--machine kms]} replays a
run exactly.
"""

import random
import traceback

import attrs

from minkms.driver import REFUSE, SERVE
from minkms.raft.config import ClusterConfig, ConfigChange
from minkms.raft.core import RaftOptions, bootstrap_state
from minkms.raft.errors import RaftError
from minkms.raft.messages import Message
from minkms.raft.ready import LEADER
from minkms.raft.types import DurableState
from minkms.sim.checker import Checker, SafetyViolation
from minkms.sim.clock import Scheduler
from minkms.sim.figure8 import Figure8
from minkms.sim.history import FAIL, OK, PENDING, READ, UNKNOWN, WRITE, History, Operation
from minkms.sim.linearizability import NOT_LINEARIZABLE, check_history as check_linearizable
from minkms.sim.machines import MACHINES
from minkms.sim.network import LinkFaults, SimNetwork
from minkms.sim.node import SimNode

MAX_NODES = 7
MAX_NODE_IDS = 12
KEYS = ("a", "b", "c")
CLIENT_TIMEOUT_MS = 400
LARGE_WRITES = 0.03
FIGURE8 = 0.4


@attrs.frozen
class SimSettings:
    """
    What a run is, besides its seed.

    @ivar nodes: the founding voters (1..7).
    @ivar fault_ms: virtual length of the fault phase.
    @ivar liveness_ms: the bound on convergence after faults stop.
    @ivar machine: the state machine's name in L{MACHINES}.
    """

    seed: int
    nodes: int = 3
    fault_ms: int = 3000
    liveness_ms: int = 5000
    machine: str = "register"

    def command(self) -> str:
        """The shell command that replays this run."""
        extra = ""
        defaults = SimSettings(0)
        if self.fault_ms != defaults.fault_ms:
            extra += f" --fault-ms {self.fault_ms}"
        if self.liveness_ms != defaults.liveness_ms:
            extra += f" --liveness-ms {self.liveness_ms}"
        if self.machine != defaults.machine:
            extra += f" --machine {self.machine}"
        return f"python -m minkms.sim --seed {self.seed} --nodes {self.nodes}{extra}"


class SimulationFailure(AssertionError):
    """A run broke safety or liveness; the message says how to replay it."""

    def __init__(self, settings: SimSettings, reason: str, at_ms: int) -> None:
        super().__init__(
            f"seed {settings.seed} with {settings.nodes} nodes failed at {at_ms} ms: {reason}\n"
            f"replay: {settings.command()}"
        )
        self.settings = settings
        self.reason = reason


@attrs.frozen
class SimResult:
    """What a passing run did (for the sweep's statistics)."""

    settings: SimSettings
    virtual_ms: int
    converged_after_ms: int
    events: int
    messages: int
    stats: dict


class _Client:
    """A client that sends one operation at a time to the node it believes leads."""

    def __init__(self, client_id: int) -> None:
        self.id = client_id
        self.target: int | None = None
        self.current: Operation | None = None


class Simulation:
    """
    Builds the cluster for one seed and runs it; L{run} raises
    L{SimulationFailure} or returns a L{SimResult}.  C{settings.machine}
    names the state machine every node runs and the workload clients send.
    """

    def __init__(self, settings: SimSettings) -> None:
        if not 1 <= settings.nodes <= MAX_NODES:
            raise ValueError(f"nodes must be in 1..{MAX_NODES}")
        if settings.machine not in MACHINES:
            raise ValueError(f"machine must be one of {', '.join(MACHINES)}")
        self.settings = settings
        self.kind = MACHINES[settings.machine]
        self.rng = rng = random.Random(f"minkms-sim:{settings.seed}:{settings.nodes}")
        self.history = History()
        self.workload = self.history.recording(self.kind.workload(rng))
        self.scheduler = Scheduler()
        self.checker = Checker(self.workload.write_id)
        self.network = SimNetwork(self.scheduler, random.Random(rng.getrandbits(64)), self._deliver)
        self.compact_every = rng.choice((3, 8, 25, 100))
        self._slow_disk = rng.choice((0.0, 0.0, 0.02, 0.1))
        self._intensity = rng.choice((0.5, 1.0, 2.0))
        self._strike_new_leaders = rng.choice((0.0, 0.0, 0.3, 0.6))
        pre_vote = rng.random() < 0.8
        check_quorum = rng.random() < 0.8
        # Production runs PreVote and CheckQuorum; without them a removed
        # node's elections come faster than a long lease's wait ends.
        leases = (0.03, 0.1, 0.3) if pre_vote and check_quorum else (0.0, 0.03)
        self.options = RaftOptions(
            election_ticks=10,
            heartbeat_ticks=rng.choice((1, 1, 2, 3)),
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_append_entries=rng.choice((1, 2, 16, 256)),
            max_inflight=rng.choice((1, 4, 16)),
            snapshot_chunk_bytes=rng.choice((1024, 4096, 32 * 1024)),
            auto_promote_lag=rng.choice((None, None, 3)),
            read_lease=rng.choice(leases),
        )
        self.reads_without_leader = rng.choice((SERVE, REFUSE))
        self.fault_end = settings.fault_ms
        self.faults_over = False
        self.stats = {
            "crashes": 0,
            "partitions": 0,
            "pauses": 0,
            "added": 0,
            "promoted": 0,
            "removed": 0,
            "transfers": 0,
            "strikes": 0,
            "figure8": 0,
            "figure8_struck": 0,
            "figure8_overwrite": 0,
        }
        founders = list(range(settings.nodes))
        config = ClusterConfig(
            voters=founders,
            addresses={n: self._address(n) for n in founders},
            next_id=settings.nodes,
            cluster_id=f"sim-{settings.seed}",
        )
        self.nodes: dict[int, SimNode] = {}
        for node_id in founders:
            self._spawn(node_id, bootstrap_state(config))
        self._next_id = settings.nodes
        self.clients = [_Client(i + 1) for i in range(rng.randint(1, 5))]
        self._barrier: Operation | None = None
        self._converged_at: int | None = None
        self.figure8 = Figure8(self)
        self._figure8_at = rng.randint(100, max(100, settings.fault_ms - 1500)) if rng.random() < FIGURE8 else None

    @staticmethod
    def _address(node_id: int) -> str:
        return f"node{node_id}.sim:7373"

    def _spawn(self, node_id: int, durable: DurableState) -> SimNode:
        node = SimNode(self, node_id, durable, self.options, self.reads_without_leader)
        self.nodes[node_id] = node
        node.start()
        return node

    def observe_leader(self, node: SimNode, term: int) -> None:
        """C{node} leads C{term}: check Election Safety; maybe strike the new leader."""
        new = term not in self.checker.leaders
        self.checker.observe_leader(node.id, term)
        if self.figure8.active:
            self.figure8.on_leader(node, term, new)
            return
        if new and not self.faults_over and self._strike_new_leaders and self.rng.random() < self._strike_new_leaders:
            self.stats["strikes"] += 1
            if self.rng.random() < 0.5:
                self.scheduler.after(self.rng.randint(0, 4), self._crash_node, node.id)
            else:
                self.scheduler.after(self.rng.randint(0, 4), self._isolate_for_a_while, node.id)

    def _crash_node(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.alive and not self.figure8.active:
            node.crash()
            self.stats["crashes"] += 1
            self.scheduler.after(self.rng.randint(10, 600), self._restart, node_id)

    def _isolate_for_a_while(self, node_id: int) -> None:
        if not self.faults_over and not self.figure8.active:
            self.network.isolate(node_id, list(self.nodes))
            self.scheduler.after(self.rng.randint(30, 600), self._heal)

    def _deliver(self, dst: int, message: Message) -> None:
        node = self.nodes.get(dst)
        if node is not None:
            node.receive(message)

    def disk_delay(self) -> int:
        """How long the next fsync takes (ms)."""
        if self._slow_disk and self.rng.random() < self._slow_disk:
            return self.rng.randint(5, 60)
        return self.rng.randint(0, 2)

    def _alive(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.alive]

    def current_leader(self) -> SimNode | None:
        leaders = [n for n in self._alive() if n.core.role == LEADER]
        return max(leaders, key=lambda n: n.core.term) if leaders else None

    # -- the run --------------------------------------------------------

    def run(self) -> SimResult:
        """Run both phases and the final checks."""
        try:
            self._run()
        except SimulationFailure:
            raise
        except SafetyViolation as violation:
            raise SimulationFailure(self.settings, str(violation), self.scheduler.now) from None
        except Exception as error:
            reason = "".join(traceback.format_exception(error)).rstrip()
            raise SimulationFailure(self.settings, reason, self.scheduler.now) from None
        return SimResult(
            settings=self.settings,
            virtual_ms=self.scheduler.now,
            converged_after_ms=self._converged_at - self.fault_end,
            events=self.scheduler.events_run,
            messages=self.network.sent,
            stats=self._summary(),
        )

    def _run(self) -> None:
        scheduler = self.scheduler
        for client in self.clients:
            scheduler.after(self.rng.randint(0, 20), self._client_step, client)
        scheduler.after(self.rng.randint(20, 200), self._nemesis_step)
        scheduler.after(100, self._audit_step)
        scheduler.at(self.fault_end, self._stop_faults)
        if self._figure8_at is not None:
            scheduler.at(self._figure8_at, self.figure8.start)
        deadline = self.fault_end + self.settings.liveness_ms
        scheduler.run_until(deadline, lambda: self._converged_at is not None)
        if self._converged_at is None:
            raise SimulationFailure(
                self.settings,
                f"no convergence within {self.settings.liveness_ms} ms after faults stopped ({self._describe()})",
                scheduler.now,
            )
        self._audit_logs()
        members = self.current_leader().core.config.members
        self.checker.check_history(
            self.history,
            {n: set(self.nodes[n].machine.applied_ops) for n in sorted(members)},
            self.kind.model(),
        )
        self._check_linearizable()

    def _check_linearizable(self) -> None:
        """The client history alone must be linearizable; an undecided check is counted."""
        result = check_linearizable(self.history, self.settings.machine)
        if result.verdict == NOT_LINEARIZABLE:
            raise SafetyViolation(f"history not linearizable: {result.explanation}")
        self.stats["linearizability_unknown"] = int(result.unknown)

    def _describe(self) -> str:
        parts = []
        for node in self.nodes.values():
            if node.alive:
                s = node.core.status()
                parts.append(
                    f"n{node.id}:{s.role[0]} t{s.term} c{s.commit} a{node.machine.applied_index} "
                    f"voters={sorted(s.config.voters)}"
                )
            else:
                parts.append(f"n{node.id}:down")
        barrier = self._barrier.status if self._barrier else "none"
        return f"barrier {barrier}; " + ", ".join(parts)

    def _summary(self) -> dict:
        stats = dict(self.stats)
        stats.update(self.history.counts())
        stats["terms"] = len(self.checker.leaders)
        stats["committed"] = max(self.checker.committed, default=0)
        stats["snapshots_installed"] = sum(n.snapshots_installed for n in self.nodes.values())
        stats["largest_message"] = self.network.largest
        return stats

    # -- clients --------------------------------------------------------

    def _client_step(self, client: _Client) -> None:
        if self.faults_over:
            return
        self.scheduler.after(self.rng.randint(3, 40), self._client_step, client)
        if client.current is not None and client.current.status == PENDING:
            return
        alive = self._alive()
        if not alive:
            return
        node = self.nodes.get(client.target) if client.target is not None else None
        if node is None or not node.alive or self.rng.random() < 0.3:
            node = self.rng.choice(alive)
        kind = WRITE if self.rng.random() < 0.6 else READ
        padding = self.rng.randint(1000, 20000) if self.rng.random() < LARGE_WRITES else 0
        op = self.history.invoke(client.id, kind, self.rng.choice(KEYS), node.id, self.scheduler.now, padding)
        client.current = op
        self.scheduler.after(CLIENT_TIMEOUT_MS, self._time_out, op, client)
        if kind == WRITE:
            node.propose_write(op)
        else:
            node.read(op)
        if op.status == FAIL:
            leader = node.core.leader
            client.target = leader if leader >= 0 else None

    def write_as_client(self, client_id: int, node: SimNode, key: str) -> Operation:
        """Send a write of C{key} to C{node} for a client outside the workload."""
        op = self.history.invoke(client_id, WRITE, key, node.id, self.scheduler.now)
        self.scheduler.after(CLIENT_TIMEOUT_MS, self._time_out, op)
        node.propose_write(op)
        return op

    def _time_out(self, op: Operation, client: _Client | None = None) -> None:
        if op.status == PENDING:
            op.finish(UNKNOWN if op.kind == WRITE else FAIL, self.scheduler.now)
            if client is not None:
                client.target = None

    # -- nemesis --------------------------------------------------------

    def _nemesis_step(self) -> None:
        if self.faults_over:
            return
        rng = self.rng
        self.scheduler.after(int(rng.randint(30, 400) / self._intensity), self._nemesis_step)
        if self.figure8.active:
            return
        action = rng.choices(
            (
                self._crash_one,
                self._partition,
                self._pause_one,
                self._change_link_faults,
                self._change_membership,
                self._transfer,
                self._heal,
            ),
            weights=(3, 3, 2, 2, 3, 1, 2),
        )[0]
        action()

    def _crash_one(self) -> None:
        alive = self._alive()
        if not alive:
            return
        leader = self.current_leader()
        if leader is not None and self.rng.random() < 0.75:
            voters = leader.core.config.voters
            up = sum(1 for n in alive if n.id in voters)
            if up - 1 < len(voters) // 2 + 1:
                return
        node = leader if leader is not None and self.rng.random() < 0.4 else self.rng.choice(alive)
        self._crash_node(node.id)

    def _restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if not node.alive and not node.retired:
            node.start()

    def _partition(self) -> None:
        ids = [n.id for n in self._alive()]
        if len(ids) < 2:
            return
        self.stats["partitions"] += 1
        rng, network = self.rng, self.network
        kind = rng.randrange(5)
        leader = self.current_leader()
        if kind == 0 and leader is not None:
            network.isolate(leader.id, list(self.nodes))
        elif kind <= 1:
            network.isolate(rng.choice(ids), list(self.nodes))
        elif kind == 2:
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            network.split(ids[:cut], ids[cut:])
        elif kind == 3:
            src, dst = rng.sample(ids, 2)
            network.split([src], [dst], one_way=True)
        else:
            rng.shuffle(ids)
            beyond_bridge = ids[1:]
            cut = len(beyond_bridge) // 2
            network.split(beyond_bridge[:cut], beyond_bridge[cut:])
        self.scheduler.after(rng.randint(50, 1500), self._heal)

    def _heal(self) -> None:
        if not self.figure8.active:
            self.network.heal()

    def _pause_one(self) -> None:
        alive = self._alive()
        if alive:
            self.stats["pauses"] += 1
            leader = self.current_leader()
            node = leader if leader is not None and self.rng.random() < 0.5 else self.rng.choice(alive)
            node.pause(self.scheduler.now + self.rng.randint(20, 800))

    def _change_link_faults(self) -> None:
        rng = self.rng
        self.network.faults = LinkFaults(
            drop=rng.choice((0.0, 0.01, 0.05, 0.2)),
            duplicate=rng.choice((0.0, 0.01, 0.05)),
            min_delay=1,
            max_delay=rng.choice((2, 5, 15)),
            slow=rng.choice((0.0, 0.01, 0.05)),
        )

    def _change_membership(self) -> None:
        leader = self.current_leader()
        if leader is None:
            return
        rng, core = self.rng, leader.core
        config = core.config
        choice = 0 if config.learners and rng.random() < 0.5 else rng.randrange(3)
        try:
            if choice == 0 and config.learners:
                learner = rng.choice(sorted(config.learners))
                progress = core.status().progress.get(learner)
                caught_up = progress is not None and progress.match + 5 >= core.log.committed
                if caught_up or rng.random() < 0.2:
                    core.propose_config(ConfigChange.promote(learner))
                    self.stats["promoted"] += 1
            elif choice == 1 and self._next_id < MAX_NODE_IDS:
                running = [n for n in self.nodes.values() if not n.retired and n.id in config.members]
                if len(running) < MAX_NODES:
                    node_id = self._next_id
                    core.propose_config(ConfigChange.add_learner(node_id, self._address(node_id)))
                    self._next_id += 1
                    self.stats["added"] += 1
                    self._spawn(node_id, DurableState())
            elif choice == 2:
                removable = sorted(config.learners)
                if len(config.voters) >= 3:
                    removable += sorted(config.voters)
                if removable:
                    target = leader.id if leader.id in removable and rng.random() < 0.3 else rng.choice(removable)
                    core.propose_config(ConfigChange.remove(target))
                    self.stats["removed"] += 1
        except RaftError:
            return
        leader.schedule_process()

    def _transfer(self) -> None:
        leader = self.current_leader()
        if leader is None:
            return
        others = sorted(leader.core.config.voters - {leader.id})
        if others:
            try:
                leader.core.transfer_leadership(self.rng.choice(others))
            except RaftError:
                return
            self.stats["transfers"] += 1
            leader.schedule_process()

    # -- after the faults -----------------------------------------------

    def _stop_faults(self) -> None:
        self.faults_over = True
        self.figure8.finish()
        self.network.heal()
        self.network.faults = LinkFaults(min_delay=1, max_delay=3)
        for node in self.nodes.values():
            node.paused_until = 0
            if not node.alive and not node.retired:
                node.start()
        self._converge_step()

    def _converge_step(self) -> None:
        now = self.scheduler.now
        self.scheduler.after(20, self._converge_step)
        leader = self.current_leader()
        barrier = self._barrier
        if barrier is None or barrier.status in (FAIL, UNKNOWN):
            if leader is not None:
                self._barrier = self.write_as_client(0, leader, "barrier")
            return
        if barrier.status != OK or leader is None:
            return
        commit = leader.core.log.committed
        if commit < barrier.index:
            return
        for member in sorted(leader.core.config.members):
            node = self.nodes.get(member)
            if node is None or not node.alive or node.machine.applied_index != commit:
                return
        self.checker.check_replicas({n.id: (n.machine.applied_index, n.machine.digest()) for n in self._alive()})
        self._converged_at = now

    def _audit_step(self) -> None:
        self._audit_logs()
        if not self.faults_over:
            self.scheduler.after(100, self._audit_step)

    def _audit_logs(self) -> None:
        for node_id, node in sorted(self.nodes.items()):
            disk = node.disk
            self.checker.check_durable_log(node_id, disk.durable_entries(), disk.durable_commit())
