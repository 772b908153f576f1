"""
The linearizability checker on hand-written histories, on the models of
the simulator's two state machines, and against a simulator with a known
bug (reads served without ReadIndex), which it must catch on its own.
"""

from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from minkms.errors import ErrKeyExists, ErrKeyNotFound
from minkms.sim.__main__ import nodes_for
from minkms.sim.checker import Checker
from minkms.sim.history import FAIL, OK, READ, UNKNOWN, WRITE, History
from minkms.sim.kmsmodel import describe_error, describe_key
from minkms.sim.linearizability import (
    EVERY_KEY,
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    NOT_OBSERVED,
    KeyModel,
    Op,
    RegisterModel,
    check,
    check_history,
    register_ops,
)
from minkms.sim.machines import machine_for
from minkms.sim.node import SimNode
from minkms.sim.simulation import SimSettings, Simulation, SimulationFailure


def write(value, call, ret, key="k", answer=True):
    """A register write; C{ret=None} means its outcome is unknown."""
    return Op(key, (WRITE, value), NOT_OBSERVED if ret is None else answer, call, ret)


def read(value, call, ret, key="k"):
    return Op(key, (READ, None), value, call, ret)


def verdict(*ops, budget=100_000):
    return check(RegisterModel(), ops, budget).verdict


class RegisterHistoryTests(SynchronousTestCase):
    def test_empty(self):
        """No operations, or only reads of a never-written key, are linearizable."""
        self.assertEqual(verdict(), LINEARIZABLE)
        self.assertEqual(verdict(read(None, 0, 1)), LINEARIZABLE)

    def test_concurrent_writes_either_order(self):
        """Overlapping writes may take effect in either order; reads during them may see either."""
        writes = (write("v1", 0, 10), write("v2", 5, 15))
        for seen in ("v1", "v2"):
            self.assertEqual(verdict(*writes, read(seen, 20, 21)), LINEARIZABLE, seen)
            self.assertEqual(verdict(*writes, read(seen, 6, 8)), LINEARIZABLE, seen)
        self.assertEqual(verdict(*writes, read(None, 1, 2)), LINEARIZABLE)

    def test_read_overlapping_write(self):
        """A read concurrent with a write may return the old or the new value."""
        for seen in ("v1", "v2"):
            self.assertEqual(verdict(write("v1", 0, 1), write("v2", 5, 10), read(seen, 4, 6)), LINEARIZABLE)

    def test_unknown_write_that_took_effect(self):
        """A write of unknown outcome may have happened, even long after it was sent."""
        history = (write("v1", 0, 1), write("v2", 2, None), read("v1", 10, 11), read("v2", 50, 51))
        self.assertEqual(verdict(*history), LINEARIZABLE)

    def test_unknown_write_that_did_not_take_effect(self):
        """A write of unknown outcome may never have happened."""
        self.assertEqual(verdict(write("v1", 0, 1), write("v2", 2, None), read("v1", 50, 51)), LINEARIZABLE)

    def test_unknown_write_cannot_be_undone(self):
        """Once a read saw an unknown write take effect, a later read cannot see the older value."""
        history = (write("v1", 0, 1), write("v2", 2, None), read("v2", 10, 11), read("v1", 20, 21))
        self.assertEqual(verdict(*history), NOT_LINEARIZABLE)

    def test_unknown_write_not_before_its_call(self):
        """A write of unknown outcome cannot take effect before it was invoked."""
        self.assertEqual(verdict(read("v1", 0, 1), write("v1", 2, None)), NOT_LINEARIZABLE)

    def test_stale_read(self):
        """A read that starts after a write completed must not return the value before it."""
        history = (write("v1", 0, 5), write("v2", 6, 10), read("v1", 11, 12))
        self.assertEqual(verdict(*history), NOT_LINEARIZABLE)
        self.assertEqual(verdict(write("v1", 0, 5), read(None, 6, 7)), NOT_LINEARIZABLE)

    def test_read_goes_back_in_time(self):
        """A read after another read must not return an older value than it did."""
        history = (
            write("v1", 0, 5),
            write("v2", 6, 20),
            read("v2", 7, 8),
            read("v1", 9, 10),
        )
        self.assertEqual(verdict(*history), NOT_LINEARIZABLE)

    def test_reads_disagree_on_write_order(self):
        """Two clients must not see two concurrent writes happen in opposite orders."""
        history = (
            write("v1", 0, 100),
            write("v2", 0, 100),
            read("v1", 10, 11),
            read("v2", 20, 21),
            read("v2", 10, 11),
            read("v1", 20, 21),
        )
        self.assertEqual(verdict(*history), NOT_LINEARIZABLE)

    def test_value_never_written(self):
        """A read cannot return a value no write wrote."""
        self.assertEqual(verdict(write("v1", 0, 1), read("v9", 2, 3)), NOT_LINEARIZABLE)

    def test_keys_are_independent(self):
        """Each key is its own register; a violation names its key."""
        ok = (write("a1", 0, 5, key="a"), read("a1", 6, 7, key="a"))
        bad = (write("b1", 0, 5, key="b"), read(None, 6, 7, key="b"))
        self.assertEqual(verdict(*ok, read(None, 6, 7, key="c")), LINEARIZABLE)
        result = check(RegisterModel(), ok + bad)
        self.assertEqual((result.verdict, result.key), (NOT_LINEARIZABLE, "b"))
        self.assertFalse(result.ok)

    def test_explanation(self):
        """A failure names the key, the op that cannot be placed and the order that got furthest."""
        result = check(
            RegisterModel(),
            (write("v1", 0, 5), write("v2", 6, 10), read("v1", 11, 12)),
            describe=lambda op: f"<{op.input[0]} {op.input[1] or op.output}>",
        )
        self.assertIn("key 'k'", result.explanation)
        self.assertIn("<read v1> cannot be placed", result.explanation)
        self.assertIn("<write v2>", result.explanation)
        self.assertIn("leaving state 'v2'", result.explanation)

    def test_budget(self):
        """A search that needs more steps than allowed is undecided, not a verdict."""
        writes = [write(f"v{i}", 0, 100) for i in range(8)]
        history = (*writes, read("v0", 101, 102), read("v1", 103, 104))
        result = check(RegisterModel(), history, budget=500)
        self.assertEqual(result.verdict, "unknown")
        self.assertTrue(result.unknown)
        self.assertFalse(result.ok)
        self.assertEqual(check(RegisterModel(), history).verdict, NOT_LINEARIZABLE)


def kms_op(key, command, output, call, ret):
    return Op(key, command, output, call, ret)


class KMSModelTests(SynchronousTestCase):
    """The per-key KMS model: enclave, versions, 409/404, status reads."""

    def setUp(self):
        self.enclave = Op(EVERY_KEY, ("enclave",), None, 0, 1)

    def status(self, output, call, ret):
        return Op("k", (READ,), output, call, ret)

    def create(self, material, output, call, ret, add_version=False, key_type=""):
        return Op("k", ("create", add_version, key_type, material), output, call, ret)

    def test_sequence(self):
        """Create, add a version, delete latest, delete all, with reads in between."""
        history = (
            self.enclave,
            self.status(describe_error(ErrKeyNotFound), 2, 3),
            self.create(b"m1", None, 4, 5, key_type="ChaCha20"),
            self.create(b"m2", ErrKeyExists, 6, 7),
            self.create(b"m3", None, 8, 9, add_version=True),
            self.status(describe_key(2, "ChaCha20", b"m3"), 10, 11),
            Op("k", ("delete", False), None, 12, 13),
            self.status(describe_key(1, "ChaCha20", b"m1"), 14, 15),
            Op("k", ("delete", True), None, 16, 17),
            Op("k", ("delete", True), ErrKeyNotFound, 18, 19),
            self.create(b"m4", None, 20, 21),
            self.status(describe_key(3, "AES256", b"m4"), 22, 23),
        )
        self.assertEqual(check(KeyModel(), history).verdict, LINEARIZABLE)

    def test_wrong_answer(self):
        """A create answered as done although the key existed is a violation."""
        history = (self.enclave, self.create(b"m1", None, 2, 3), self.create(b"m2", None, 4, 5))
        self.assertEqual(check(KeyModel(), history).verdict, NOT_LINEARIZABLE)

    def test_unknown_create_shows_in_versions(self):
        """A create of unknown outcome that took effect explains a later version number."""
        history = (
            self.enclave,
            self.create(b"m1", NOT_OBSERVED, 2, None),
            self.create(b"m2", None, 10, 11, add_version=True),
            self.status(describe_key(2, "AES256", b"m2"), 12, 13),
        )
        self.assertEqual(check(KeyModel(), history).verdict, LINEARIZABLE)
        without = (*history[:2], history[2], self.status(describe_key(1, "AES256", b"m2"), 12, 13))
        self.assertEqual(check(KeyModel(), without).verdict, LINEARIZABLE)

    def test_stale_status(self):
        """A status read after a completed delete must not show the deleted version."""
        history = (
            self.enclave,
            self.create(b"m1", None, 2, 3),
            Op("k", ("delete", False), None, 4, 5),
            self.status(describe_key(1, "AES256", b"m1"), 6, 7),
        )
        self.assertEqual(check(KeyModel(), history).verdict, NOT_LINEARIZABLE)

    def test_before_enclave(self):
        """Before the enclave exists, a read says so; an enclave op counts for every key."""
        history = (
            Op("k", (READ,), "404 enclave does not exist", 0, 1),
            Op(EVERY_KEY, ("enclave",), None, 2, 3),
            Op("j", ("create", False, "", b"m"), None, 4, 5),
            Op("k", (READ,), "404 enclave does not exist", 6, 7),
        )
        result = check(KeyModel(), history)
        self.assertEqual((result.verdict, result.key), (NOT_LINEARIZABLE, "k"))


class HistoryConversionTests(SynchronousTestCase):
    def test_register_ops(self):
        """Failed ops are left out, and so are unknown writes no read observed."""
        history = History()
        acked = history.invoke(1, WRITE, "a", 0, 0)
        acked.finish(OK, 5)
        acked.answer = True
        history.invoke(2, WRITE, "a", 0, 1).finish(FAIL, 2)
        seen = history.invoke(3, WRITE, "a", 0, 3)
        seen.finish(UNKNOWN, 400)
        history.invoke(4, WRITE, "a", 0, 4).finish(UNKNOWN, 400)
        history.invoke(5, READ, "a", 0, 10).finish(OK, 11, seen.value)
        history.invoke(5, READ, "a", 0, 12).finish(FAIL, 13)
        ops = register_ops(history)
        self.assertEqual([op.ref.op_id for op in ops], [1, 3, 5])
        self.assertEqual([op.ret for op in ops], [5, None, 11])
        self.assertEqual(check_history(history, "register").verdict, LINEARIZABLE)


FIRST_SEEDS = range(0, 60)


def _reads_without_read_index(self: SimNode, op) -> None:
    """The bug: serve a read from whatever this node has applied, leader or not."""
    if self.frozen(self._later, self.incarnation, self.read, op):
        return
    op.index = self.machine.applied_index
    op.finish(OK, self.sim.scheduler.now, self.machine.read(op.key))


class SimulatorTests(SynchronousTestCase):
    def test_clean_runs(self):
        """Runs of the real simulator, on both machines, have linearizable histories."""
        for seed in (5, 6):
            settings = SimSettings(seed, 3, fault_ms=1000, machine=machine_for(seed))
            sim = Simulation(settings)
            sim.run()
            result = check_history(sim.history, settings.machine)
            self.assertEqual(result.verdict, LINEARIZABLE, settings.machine)
            self.assertGreater(result.steps, 0)

    def test_reads_without_read_index_are_caught(self):
        """
        With reads served from local state, some of the first seeds fail,
        and the linearizability checker alone, on the client history,
        finds violations in runs of both machines.
        """
        caught = set()
        with mock.patch.object(SimNode, "read", _reads_without_read_index):
            for seed in FIRST_SEEDS:
                settings = SimSettings(seed, nodes_for(seed), fault_ms=2000, machine=machine_for(seed))
                sim = Simulation(settings)
                try:
                    sim.run()
                except SimulationFailure:
                    result = check_history(sim.history, settings.machine)
                    if result.verdict == NOT_LINEARIZABLE:
                        self.assertIn("cannot be placed", result.explanation)
                        caught.add(settings.machine)
        self.assertEqual(caught, {"register", "kms"})

    def test_run_fails_on_its_own(self):
        """
        With the replay's freshness checks switched off as well, a run
        with the bug fails through the linearizability check.
        """
        reasons = []
        with (
            mock.patch.object(SimNode, "read", _reads_without_read_index),
            mock.patch.object(Checker, "_check_read_floors", lambda *args: None),
            mock.patch.object(Checker, "_replay", lambda *args: None),
        ):
            for seed in FIRST_SEEDS:
                settings = SimSettings(seed, nodes_for(seed), fault_ms=2000, machine=machine_for(seed))
                try:
                    Simulation(settings).run()
                except SimulationFailure as failure:
                    reasons.append(failure.reason)
                    break
        self.assertEqual(len(reasons), 1)
        self.assertTrue(reasons[0].startswith("history not linearizable: key "), reasons[0])
