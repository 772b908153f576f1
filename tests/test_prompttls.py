"""
L{minkms.server.prompttls}: what connections write leaves by the end of
the reactor turn, once per connection, or at once when flushed.
(C{test_service} checks that the node's listener speaks it.)
"""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from minkms.server.prompttls import TurnSends


class Connection:
    """Stands for a L{PromptTLS}: records when it is told to send."""

    def __init__(self, name, log):
        self.name = name
        self.log = log

    def push(self):
        self.log.append(self.name)


class TurnSendsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.sends = TurnSends(self.clock)
        self.log: list = []
        self.a, self.b = Connection("a", self.log), Connection("b", self.log)

    def test_sent_at_the_end_of_the_turn_once_each_in_order(self):
        """Each connection that wrote is sent once, in the order it first wrote, when the turn ends."""
        for connection in (self.b, self.a, self.b):
            self.sends.written(connection)
        self.assertEqual(self.log, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1, "one call for the whole turn")
        self.clock.advance(0)
        self.assertEqual(self.log, ["b", "a"])
        self.clock.advance(0)
        self.assertEqual(self.log, ["b", "a"], "nothing written since, nothing sent")

    def test_flush_sends_now(self):
        """A flush sends what was written so far; the end of the turn then has nothing more to send."""
        self.sends.written(self.a)
        self.sends.flush()
        self.assertEqual(self.log, ["a"])
        self.sends.written(self.b)
        self.clock.advance(0)
        self.assertEqual(self.log, ["a", "b"])

    def test_stop_sends_what_is_left_and_leaves_no_call(self):
        self.sends.written(self.a)
        self.sends.stop()
        self.assertEqual((self.log, self.clock.getDelayedCalls()), (["a"], []))
