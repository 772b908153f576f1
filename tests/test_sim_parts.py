"""
Tests of the simulator's own parts: the crash-prone disk, the checker, the
KMS adapter and its model, and reproducibility of a run from its seed.
"""

import contextlib
import io
import random

from twisted.trial.unittest import SynchronousTestCase

from minkms.errors import ErrEnclaveNotFound, ErrKeyExists, ErrKeyNotFound
from minkms.raft.core import RaftCore, bootstrap_state
from minkms.raft.types import ENTRY_NORMAL, Entry
from minkms.sim.__main__ import main
from minkms.sim.checker import Checker, SafetyViolation
from minkms.sim.disk import SimDisk
from minkms.sim.harness import cluster_config
from minkms.sim.history import OK, READ, WRITE, History
from minkms.sim.kmsmachine import KMSMachine, KMSWorkload, write_id
from minkms.sim.kmsmodel import KeyRingModel
from minkms.sim.simulation import SimSettings, Simulation, SimulationFailure
from minkms.sim.statemachine import RegisterMachine, RegisterWorkload, encode_write
from minkms.state import changes


class DiskTests(SynchronousTestCase):
    """SimDisk loses what was not synced."""

    def _ready(self):
        core = RaftCore(1, bootstrap_state(cluster_config([1])), random.Random(0))
        core.campaign()
        return core.ready()

    def test_synced_writes_survive(self):
        """After sync, a crash keeps everything."""
        disk = SimDisk(bootstrap_state(cluster_config([1])))
        ready = self._ready()
        disk.write_ready(ready)
        disk.sync()
        disk.crash(random.Random(0))
        state = disk.durable_state()
        self.assertEqual(state.hard_state, ready.hard_state)
        self.assertEqual(state.entries[-1], ready.entries[-1])

    def test_unsynced_writes_may_vanish(self):
        """A crash before sync keeps only a prefix of the queued writes."""
        lost = set()
        for seed in range(20):
            disk = SimDisk(bootstrap_state(cluster_config([1])))
            disk.write_ready(self._ready())
            lost.add(disk.crash(random.Random(seed)))
            self.assertEqual(disk.durable_state().entries[0].index, 1)
        self.assertIn(0, lost)
        self.assertGreater(max(lost), 0)


class CheckerTests(SynchronousTestCase):
    """The checker notices what it must."""

    def test_two_leaders_in_a_term(self):
        """Election Safety."""
        checker = Checker(RegisterWorkload(random.Random(0)).write_id)
        checker.observe_leader(1, 5)
        checker.observe_leader(1, 5)
        self.assertRaises(SafetyViolation, checker.observe_leader, 2, 5)

    def test_changed_committed_entry(self):
        """State Machine Safety: another entry applied at a committed index."""
        checker = Checker(RegisterWorkload(random.Random(0)).write_id)
        checker.on_apply(1, Entry(3, 2, ENTRY_NORMAL, encode_write(1, "k", "v1")), b"d")
        self.assertRaises(
            SafetyViolation,
            checker.on_apply,
            2,
            Entry(3, 3, ENTRY_NORMAL, encode_write(2, "k", "v2")),
            b"d",
        )
        self.assertRaises(SafetyViolation, checker.on_restore, 2, 3, b"other")

    def test_lost_ack_and_stale_read(self):
        """An acknowledged write missing at the end, and a read older than an earlier acknowledged write."""
        checker = Checker(RegisterWorkload(random.Random(0)).write_id)
        history = History()
        config = bootstrap_state(cluster_config([1])).entries[0]
        write = history.invoke(1, WRITE, "k", 1, now=0)
        write.index = 2
        write.finish(OK, 10)
        checker.on_apply(1, config, b"c")
        checker.on_apply(1, Entry(2, 1, ENTRY_NORMAL, encode_write(write.op_id, "k", write.value)), b"d")
        self.assertRaises(SafetyViolation, checker.check_history, history, {1: set()}, RegisterMachine())
        checker.check_history(history, {1: {write.op_id}}, RegisterMachine())
        read = history.invoke(2, READ, "k", 1, now=20)
        read.index = 1
        read.finish(OK, 25, None)
        self.assertRaises(SafetyViolation, checker.check_history, history, {1: {write.op_id}}, RegisterMachine())

    def test_read_disagrees_with_model(self):
        """A read returning what the state did not hold at the index it was served at."""
        checker = Checker(RegisterWorkload(random.Random(0)).write_id)
        history = History()
        checker.on_apply(1, bootstrap_state(cluster_config([1])).entries[0], b"c")
        read = history.invoke(2, READ, "k", 1, now=20)
        read.index = 1
        read.finish(OK, 25, "v7")
        self.assertRaises(SafetyViolation, checker.check_history, history, {}, RegisterMachine())

    def test_diverged_replicas(self):
        """Replicas at the same applied index must have the same digest."""
        checker = Checker(RegisterWorkload(random.Random(0)).write_id)
        checker.check_replicas({1: (5, "a"), 2: (5, "a"), 3: (4, "b")})
        self.assertRaises(SafetyViolation, checker.check_replicas, {1: (5, "a"), 2: (5, "b")})


class ReproducibilityTests(SynchronousTestCase):
    """A run is a function of its seed."""

    def test_same_seed_same_run(self):
        """Two runs of one seed do exactly the same."""
        settings = SimSettings(11, 5, fault_ms=1500)
        first, second = Simulation(settings).run(), Simulation(settings).run()
        self.assertEqual(
            (first.events, first.messages, first.stats),
            (second.events, second.messages, second.stats),
        )

    def test_failure_names_replay_command(self):
        """A failing run reports its seed and the command that replays it."""
        simulation = Simulation(SimSettings(3, 3))

        def broken(node, term):
            raise SafetyViolation("injected")

        simulation.checker.observe_leader = broken
        failure = self.assertRaises(SimulationFailure, simulation.run)
        self.assertIn("seed 3 with 3 nodes", str(failure))
        self.assertIn("replay: python -m minkms.sim --seed 3 --nodes 3", str(failure))

    def test_register_snapshot_round_trip(self):
        """The shipped state machine restores exactly what it snapshotted."""
        machine = RegisterMachine()
        machine.apply(bootstrap_state(cluster_config([1])).entries[0])
        machine.apply(Entry(2, 1, ENTRY_NORMAL, encode_write(7, "a", "x")))
        copy = RegisterMachine()
        copy.restore(machine.snapshot())
        self.assertEqual(
            (copy.values, copy.applied_ops, copy.digest()),
            (machine.values, machine.applied_ops, machine.digest()),
        )
        self.assertEqual(copy.config, machine.config)


class KMSMachineTests(SynchronousTestCase):
    """The adapter drives the real KMS state machine, and the model agrees with it."""

    def setUp(self):
        self.history = History()
        self.workload = KMSWorkload(random.Random(1))
        self.machine = KMSMachine()
        self.model = KeyRingModel()
        self.index = 0
        self.apply(bootstrap_state(cluster_config([1])).entries[0])

    def apply(self, entry):
        self.index = entry.index
        answer = self.machine.apply(entry)
        self.assertEqual(answer, self.model.apply(entry))
        return answer

    def write(self, key, roll_to):
        """Propose writes on C{key} until the workload picks what C{roll_to} accepts."""
        while True:
            op = self.history.invoke(1, WRITE, key, 1, now=self.index)
            data = self.workload.encode(op, now=self.index)
            if roll_to(data):
                self.assertEqual(write_id(data), op.op_id)
                return self.apply(Entry(self.index + 1, 1, ENTRY_NORMAL, data))

    def test_commands_and_reads_agree_with_model(self):
        """Keys are created, versioned and deleted as the model says; reads agree."""

        def kind(op, **fields):
            def accept(data):
                command = changes.decode(data)
                return command.op == op and all(getattr(command, f) == v for f, v in fields.items())

            return accept

        self.assertEqual(self.write("a", kind("key.create", add_version=False)), ErrEnclaveNotFound)
        self.assertIsNone(self.write("a", kind("enclave.create")))
        self.assertIsNone(self.write("a", kind("key.create", add_version=False)))
        self.assertEqual(self.write("a", kind("key.create", add_version=False)), ErrKeyExists)
        self.assertIsNone(self.write("a", kind("key.create", add_version=True)))
        self.assertIsNone(self.write("a", kind("key.delete", all_versions=True)))
        self.assertEqual(self.write("a", kind("key.delete")), ErrKeyNotFound)
        self.assertEqual(self.machine.read("a"), "404 key does not exist")
        self.assertIsNone(self.write("a", kind("key.create", add_version=True)))
        self.assertTrue(self.machine.read("a").startswith("v3 "))
        for key in ("a", "b"):
            self.assertEqual(self.machine.read(key), self.model.read(key))

    def test_snapshot_round_trip(self):
        """A restored replica has the same state, digest and applied writes."""
        for _ in range(20):
            self.write("a", lambda data: True)
        copy = KMSMachine()
        copy.restore(self.machine.snapshot())
        self.assertEqual(
            (copy.applied_index, copy.applied_ops, copy.digest(), copy.read("a")),
            (
                self.machine.applied_index,
                self.machine.applied_ops,
                self.machine.digest(),
                self.machine.read("a"),
            ),
        )
        self.assertEqual(copy.digest(), self.machine.kms.digest())

    def test_same_seed_same_run(self):
        """A KMS run is a function of its seed, too."""
        settings = SimSettings(12, 3, fault_ms=800, machine="kms")
        first, second = Simulation(settings).run(), Simulation(settings).run()
        self.assertEqual(
            (first.events, first.messages, first.stats),
            (second.events, second.messages, second.stats),
        )


class CommandLineTests(SynchronousTestCase):
    """python -m minkms.sim."""

    def test_replay_one_seed(self):
        """Replaying a passing seed exits with status 0 and says so."""
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            status = main(["--seed", "4", "--nodes", "3", "--fault-ms", "500"])
        self.assertEqual(status, 0)
        self.assertIn("seed 4 nodes 3 register: ok", output.getvalue())

    def test_replay_names_the_machine(self):
        """A KMS run's replay command says so."""
        settings = SimSettings(5, 3, machine="kms")
        self.assertEqual(settings.command(), "python -m minkms.sim --seed 5 --nodes 3 --machine kms")
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            status = main(["--seed", "5", "--nodes", "3", "--fault-ms", "500", "--machine", "kms"])
        self.assertEqual(status, 0)
        self.assertIn("seed 5 nodes 3 kms: ok", output.getvalue())
