"""
L{minkms.server.slices}: CPU-long work done on the reactor thread a slice
per turn, so that other work runs between the slices.
"""

from twisted.internet.task import SchedulerStopped
from twisted.trial import unittest

from minkms.server.slices import SlicedWork


class _StepClock:
    """A clock that moves one millisecond each time it is read while a piece is being made."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Call:
    def __init__(self, calls: list, f) -> None:
        self._calls, self.f = calls, f

    def cancel(self) -> None:
        self._calls.remove(self)


class _Turns:
    """A reactor's turns: what is called for now runs in the next turn, not in this one."""

    def __init__(self) -> None:
        self.calls: list[_Call] = []

    def callLater(self, delay, f):
        call = _Call(self.calls, f)
        self.calls.append(call)
        return call

    def turn(self) -> None:
        calls, self.calls[:] = list(self.calls), []
        for call in calls:
            call.f()


class SlicedWorkTests(unittest.TestCase):
    def setUp(self):
        self.reactor = _Turns()
        self.clock = _StepClock()
        self.made: list[int] = []

    def pieces(self, count: int):
        for n in range(count):
            self.clock.now += 0.001
            self.made.append(n)
            yield f"<{n}>".encode()

    def test_joins_the_pieces_over_several_turns(self):
        """Each turn makes pieces until its slice (4 ms here) is spent; the result is every piece in order."""
        sliced = SlicedWork(self.reactor, seconds=0.004, clock=self.clock)
        results = []
        sliced.join(self.pieces(10)).addCallback(results.append)
        self.assertEqual(self.made, [], "nothing runs in the caller's turn")
        per_turn = []
        while not results:
            before = len(self.made)
            self.reactor.turn()
            per_turn.append(len(self.made) - before)
        self.assertEqual(results, [b"".join(f"<{n}>".encode() for n in range(10))])
        self.assertGreater(len(per_turn), 2)
        self.assertLessEqual(max(per_turn), 5, "a turn ends once its slice is spent")

    def test_other_calls_run_between_slices(self):
        """A call made for the next turn runs before the dump is done: the reactor is not held."""
        sliced = SlicedWork(self.reactor, seconds=0.004, clock=self.clock)
        results, other = [], []
        sliced.join(self.pieces(20)).addCallback(results.append)
        self.reactor.turn()
        self.reactor.callLater(0, lambda: other.append(len(self.made)))
        while not results:
            self.reactor.turn()
        self.assertEqual(len(other), 1)
        self.assertLess(other[0], 20)

    def test_a_failing_piece_fails_the_job(self):
        def pieces():
            yield b"a"
            raise ValueError("broken state")

        failures = []
        SlicedWork(self.reactor).join(pieces()).addErrback(failures.append)
        for _ in range(3):
            self.reactor.turn()
        self.assertEqual(len(failures), 1)
        self.assertEqual(str(failures[0].value), "broken state")

    def test_stop_abandons_unfinished_jobs(self):
        """A node that stops mid-dump answers the dump's waiter and leaves no call pending."""
        sliced = SlicedWork(self.reactor, seconds=0.004, clock=self.clock)
        failures = []
        sliced.join(self.pieces(100)).addErrback(failures.append)
        self.reactor.turn()
        sliced.stop()
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0].check(SchedulerStopped))
        self.assertEqual(self.reactor.calls, [])
        self.assertLess(len(self.made), 100)
