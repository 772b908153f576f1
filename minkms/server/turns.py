"""
How much client work one turn of the reactor may do.

The reactor reads every ready connection in one turn, and what a node
writes leaves when the turn ends, or sooner when the Raft driver flushes
its messages (L{minkms.server.prompttls}).  Under many clients a turn of
API requests alone can outlast an election timeout, and then the leader's
heartbeats and appends, and the answers it reads from its peers, wait
behind them.  So API connections share a budget per turn: once it is
spent, a connection that has data is paused and served, in arrival order,
in a later turn.  Peer connections are never held, so peer traffic moves
every turn.
"""

import collections
import time
from collections.abc import Callable

TURN_BUDGET = 0.02
"""Seconds of API work one reactor turn may do before the rest waits."""


class TurnBudget:
    """The API work done in the current reactor turn, and who waits for the next."""

    def __init__(self, reactor, seconds: float = TURN_BUDGET, clock=time.perf_counter) -> None:
        self._reactor = reactor
        self._seconds = seconds
        self._clock = clock
        self._started: float | None = None
        self._waiting: collections.deque[Callable[[], None]] = collections.deque()
        self._next_turn = None

    def allows(self) -> bool:
        """Whether API work may still run in this turn."""
        now = self._clock()
        if self._started is None:
            self._started = now
            self._schedule()
        return now - self._started < self._seconds

    def wait(self, resume: Callable[[], None]) -> None:
        """Call C{resume()} in a later turn, after those already waiting."""
        self._waiting.append(resume)
        self._schedule()

    def _schedule(self) -> None:
        if self._next_turn is None:
            self._next_turn = self._reactor.callLater(0, self._turn)

    def _turn(self) -> None:
        self._next_turn = None
        self._started = None
        while self._waiting and self.allows():
            self._waiting.popleft()()
