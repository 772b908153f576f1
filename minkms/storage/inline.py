"""
When the event loop writes an append itself instead of handing it to the
storage thread.

A hand-off costs more than the write on a fast disk: the thread wakes,
takes the interpreter lock from the loop, writes and fsyncs, takes the
lock again and wakes the loop through its waker pipe, and on a busy
machine each of those steps waits for a core.  Writing a small batch on
the loop costs it the fsync and nothing else, and it sent what could
leave first (the leader's Appends) before it writes.  On a slow disk, or
for a large batch (a snapshot), the loop must stay free for heartbeats
and reads, so those go to the thread.  The speed is what the last appends
took, on whichever thread wrote them; the first appends after a start go
to the thread until that is known.

The leader's appends always go to the thread.  Its own write is seldom on
a write's path (its Appends left before it began, and under read leases it
answers once every holder has the write), and a disk that stalls for a
second must not stop its event loop: a leader that stops sending
heartbeats loses its leadership, and every write in flight with it.
"""

import collections
from collections.abc import Iterable

from minkms.raft.types import Entry, HardState

INLINE_MAX_BYTES = 64 * 1024
"""The largest batch (entry payload bytes) the event loop writes itself."""

INLINE_MAX_SECONDS = 0.002
"""The loop writes itself only while most of the last appends took less than this."""

INLINE_WINDOW = 16
"""How many of the last appends' times count."""


class InlineAppends:
    """
    Decides, batch by batch, whether the event loop writes an append itself.

    @ivar leading: the node leads (its node sets it): every append goes to the thread.
    """

    def __init__(
        self,
        max_bytes: int = INLINE_MAX_BYTES,
        max_seconds: float = INLINE_MAX_SECONDS,
        window: int = INLINE_WINDOW,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.leading = False
        self._recent: collections.deque[float] = collections.deque(maxlen=window)

    def allows(self, records: Iterable[object]) -> bool:
        """Whether the batch C{records} may be written on the event loop now."""
        if self.leading:
            return False
        recent = self._recent
        if len(recent) < (recent.maxlen or 0):
            return False
        if 2 * sum(1 for took in recent if took >= self.max_seconds) >= len(recent):
            return False
        size = 0
        for record in records:
            if isinstance(record, Entry):
                size += len(record.data)
            elif not isinstance(record, HardState):
                return False
        return size <= self.max_bytes

    def took(self, seconds: float) -> None:
        """An fsynced append took C{seconds} to write."""
        self._recent.append(seconds)
