"""
Warns when the reactor ran the node's tick late: a leader's heartbeats went
out late by as much, and past an election timeout its followers call an
election.  Operators of etcd know the warning ("leader failed to send out
heartbeat on time"); it names the usual causes, so that a leadership change
under load can be traced to what held the node.
"""

from collections.abc import Callable

QUIET_SECONDS = 10.0
"""At most one warning in this long; those held back are counted in the next."""


class StallWatch:
    """
    Compares each tick's time with the last one's.  A gap of more than
    two tick intervals means the reactor was held by at least one whole
    interval: a long collection, a CPU-long job, an overloaded machine.
    """

    def __init__(
        self, interval: float, clock: Callable[[], float], warn: Callable[[str], None], quiet: float = QUIET_SECONDS
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._warn = warn
        self._quiet = quiet
        self._last: float | None = None
        self._warned_at: float | None = None
        self._held_back = 0
        self._longest_held_back = 0.0
        self.longest = 0.0

    def tick(self) -> None:
        """Called by each tick of the node."""
        now = self._clock()
        last, self._last = self._last, now
        if last is None:
            return
        late = now - last - self._interval
        if late <= self._interval:
            return
        self.longest = max(self.longest, late)
        if self._warned_at is not None and now - self._warned_at < self._quiet:
            self._held_back += 1
            self._longest_held_back = max(self._longest_held_back, late)
            return
        since = ""
        if self._held_back:
            since = (
                f"; {self._held_back} more since the last warning, the longest {1000 * self._longest_held_back:.0f} ms"
            )
        self._warn(
            f"the node's tick ran {1000 * late:.0f} ms late (ticks every {1000 * self._interval:.0f} ms): "
            f"its heartbeats were late as much, and followers call an election after the election timeout; "
            f"the process was held (an overloaded machine, a long garbage collection, or swapping){since}"
        )
        self._warned_at = now
        self._held_back = 0
        self._longest_held_back = 0.0

    def restart(self) -> None:
        """Ticking stopped and starts again: the pause between is no stall."""
        self._last = None
