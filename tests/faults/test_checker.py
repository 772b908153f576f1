"""
The fault checker's classes on small hand-written histories: a stale read
is told apart from a history no stale read explains, and a final state
that lost an acknowledged import is named as such.
"""

from twisted.trial.unittest import SynchronousTestCase

from minkms.errors import ErrKeyNotFound
from tests.faults import checker
from tests.faults.workload import OK, REJECTED, UNKNOWN, Record


def record(op_id, kind, value, invoked, completed, node="n0", arg=None, outcome=OK, name="k", client=0):
    return Record(op_id, client, node, kind, name, arg, invoked, completed, outcome, value)


class CheckerTests(SynchronousTestCase):
    def findings(self, records, final=()):
        return checker.check_run(list(records), list(final), {}, [], []).counts()

    def test_linearizable_history_is_clean(self):
        history = [
            record(1, "import", None, 0, 10, arg=1),
            record(2, "encrypt", (1, 1), 20, 30, node="n1"),
            record(3, "rotate", None, 40, 50),
            record(4, "status", 2, 60, 70, node="n2"),
        ]
        self.assertEqual(self.findings(history), {})

    def test_stale_read(self):
        """A read on another node that misses an acknowledged import is a stale read."""
        history = [
            record(1, "import", None, 0, 10, arg=1),
            record(2, "status", ErrKeyNotFound.message, 20, 30, node="n1"),
        ]
        self.assertEqual(self.findings(history), {checker.STALE_READ: 1})

    def test_read_of_a_version_never_written(self):
        history = [record(1, "import", None, 0, 10, arg=1), record(2, "status", 3, 20, 30, node="n1")]
        self.assertEqual(self.findings(history), {checker.NOT_LINEARIZABLE: 1})

    def test_unknown_write_may_have_happened(self):
        history = [
            record(1, "import", None, 0, None, arg=1, outcome=UNKNOWN),
            record(2, "encrypt", (1, 1), 20, 30, node="n1"),
        ]
        self.assertEqual(self.findings(history), {})

    def test_lost_import(self):
        """The final reads on every node must show an acknowledged import's material."""
        history = [record(1, "import", None, 0, 10, arg=1)]
        final = [record(2, "encrypt", ErrKeyNotFound.message, 100, 110, node=n, client=-1) for n in ("n0", "n1")]
        counts = self.findings(history, final)
        self.assertEqual(counts[checker.LOST_WRITE], 2)
        self.assertIn(checker.NOT_LINEARIZABLE, counts)

    def test_nodes_disagree(self):
        history = [record(1, "import", None, 0, 10, arg=1)]
        final = [
            record(2, "encrypt", (1, 1), 100, 110, node="n0", client=-1),
            record(3, "encrypt", (1, None), 100, 110, node="n1", client=-1),
        ]
        self.assertIn(checker.DISAGREE, self.findings(history, final))

    def test_log_traceback(self):
        findings = checker.Findings()
        log = (
            "2026 [x#critical] request failed\n\tTraceback (most recent call last):\n"
            "\t  File \"a.py\", line 1, in f\n\t    g()\n\tbuiltins.ValueError: boom\n\t\n"
            "2026 [y#critical] storage failed\n\tTraceback (most recent call last):\n"
            "\t  File \"b.py\", line 2, in h\n\tOSError: [Errno 28] No space left on device\n"
        )
        checker.check_logs({"n0": log}, findings)
        self.assertEqual(
            findings.anomalies[checker.TRACEBACK], ["n0: 2026 [x#critical] request failed: builtins.ValueError: boom"]
        )

    def test_write_refused_on_a_stale_state(self):
        """A 409 for a key that an acknowledged delete removed is its own class."""
        history = [
            record(1, "import", None, 0, 10, arg=1),
            record(2, "delete", None, 20, 30),
            record(3, "create", checker.ErrKeyExists.message, 40, 50, node="n1", outcome=REJECTED),
        ]
        self.assertEqual(self.findings(history), {checker.STALE_REJECTION: 1})
