"""
Virtual time: an event queue that runs callbacks in time order.

Time is an integer number of virtual milliseconds; events at the same time
run in the order they were scheduled, so a run depends only on its seed.
"""

import heapq
from collections.abc import Callable
from typing import Any


class Scheduler:
    """
    The simulator's clock and event loop.

    @ivar now: the current virtual time in milliseconds.
    @ivar events_run: how many callbacks ran (for statistics).
    """

    def __init__(self) -> None:
        self.now = 0
        self.events_run = 0
        self._queue: list[tuple[int, int, Callable[..., Any], tuple]] = []
        self._seq = 0

    def at(self, when: int, callback: Callable[..., Any], *args: Any) -> None:
        """Run C{callback(*args)} at virtual time C{when} (not before now)."""
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, callback, args))

    def after(self, delay: int, callback: Callable[..., Any], *args: Any) -> None:
        """Run C{callback(*args)} C{delay} ms from now."""
        self.at(self.now + delay, callback, *args)

    def run_until(self, deadline: int, stop: Callable[[], bool] = lambda: False) -> None:
        """Run events up to C{deadline} (inclusive) or until C{stop()} holds."""
        queue = self._queue
        while queue and queue[0][0] <= deadline:
            when, _, callback, args = heapq.heappop(queue)
            self.now = when
            callback(*args)
            self.events_run += 1
            if stop():
                return
        self.now = max(self.now, deadline)
