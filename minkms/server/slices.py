"""
CPU-long work on the reactor thread, a few milliseconds per turn.

A thread does not take such work off the reactor in CPython.  The thread
holds the interpreter lock for a switch interval at a time, and the reactor
thread, which lets the lock go at every system call, waits for it again
after each one.  Measured at 300,000 keys: while a snapshot was dumped on
another thread, a loop of 100 system calls per turn made 2 turns a second
instead of 6,500, with gaps of up to 529 ms; on a 3-node cluster at 1,600
writes a second, the leader's ticks came up to 1.6 s late and its followers
called an election.  Sliced on the reactor thread, the same work delays a
turn by at most L{SLICE_SECONDS}.
"""

import time
from collections.abc import Callable, Iterable

from twisted.internet import defer, task

SLICE_SECONDS = 0.004
"""The longest one reactor turn gives to sliced work."""


class _Deadline:
    """True once a slice's time is spent: the Cooperator's cue to yield the turn."""

    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def __call__(self) -> bool:
        return self._clock() >= self._end


class SlicedWork:
    """
    Runs jobs given as iterators on the reactor thread, one step after
    another until L{SLICE_SECONDS} are spent, then the rest in later turns.
    """

    def __init__(self, reactor, seconds: float = SLICE_SECONDS, clock: Callable[[], float] = time.perf_counter) -> None:
        self._cooperator = task.Cooperator(
            terminationPredicateFactory=lambda: _Deadline(clock, seconds),
            scheduler=lambda f: reactor.callLater(0, f),
        )

    def join(self, pieces: Iterable[bytes]) -> defer.Deferred:
        """
        Fires with the concatenation of C{pieces}, each produced in a step
        of its own; fails with what producing one raised, or with
        C{SchedulerStopped} if L{stop} came first.
        """
        parts: list[bytes] = []

        def steps():
            for piece in pieces:
                parts.append(piece)
                yield None

        d = self._cooperator.cooperate(steps()).whenDone()
        d.addCallback(lambda _: b"".join(parts))
        return d

    def stop(self) -> None:
        """Abandon every unfinished job (the node is stopping)."""
        self._cooperator.stop()
