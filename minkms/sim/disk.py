"""
A simulated disk: writes become durable only when synced.

Every write is queued in order; L{SimDisk.sync} makes the queue durable.  A
crash keeps a random prefix of the queue (some writes happened to reach the
platter) and loses the rest, which is what an fsync-less acknowledgement
would lose on a power failure.
"""

import random

from minkms.raft.ready import Ready
from minkms.raft.types import DurableState, Entry, HardState, Snapshot

_INSTALL = "install"
_TRUNCATE = "truncate"
_ENTRY = "entry"
_HARD = "hard"


class SimDisk:
    """
    The durable state of one node plus its not-yet-synced writes.

    @ivar syncs: how many times the disk was synced (for statistics).
    """

    def __init__(self, initial: DurableState = DurableState()) -> None:
        self._hard = initial.hard_state
        self._snapshot = initial.snapshot
        self._entries: list[Entry] = list(initial.entries)
        self._pending: list[tuple[str, object]] = []
        self.syncs = 0

    def write_ready(self, ready: Ready) -> None:
        """Queue what C{ready} asks to persist, in the contract's order."""
        if ready.snapshot is not None:
            self._pending.append((_INSTALL, ready.snapshot))
        if ready.entries:
            self._pending.append((_TRUNCATE, ready.entries[0].index))
            self._pending.extend((_ENTRY, entry) for entry in ready.entries)
        if ready.hard_state is not None:
            self._pending.append((_HARD, ready.hard_state))

    def sync(self) -> None:
        """Make every queued write durable (fsync)."""
        for op in self._pending:
            self._apply(op)
        self._pending = []
        self.syncs += 1

    def compact(self, snapshot: Snapshot) -> None:
        """
        Store C{snapshot} and drop the entries it covers, durably (write a
        new file, fsync, rename), after syncing what was queued.
        """
        self.sync()
        self._snapshot = snapshot
        self._entries = [e for e in self._entries if e.index > snapshot.meta.index]

    def crash(self, rng: random.Random) -> int:
        """Lose the unsynced writes except a random prefix; returns how many were lost."""
        kept = rng.randint(0, len(self._pending))
        for op in self._pending[:kept]:
            self._apply(op)
        lost = len(self._pending) - kept
        self._pending = []
        return lost

    def durable_state(self) -> DurableState:
        """What a restarting node finds on this disk."""
        return DurableState(self._hard, self._snapshot, tuple(self._entries))

    def durable_commit(self) -> int:
        """The commit index on disk."""
        return self._hard.commit

    def durable_entries(self) -> list[Entry]:
        """The entries on disk (after the snapshot)."""
        return self._entries

    def _apply(self, op: tuple[str, object]) -> None:
        kind, value = op
        if kind == _INSTALL:
            self._snapshot = value
            self._entries = []
        elif kind == _TRUNCATE:
            offset = self._snapshot.meta.index if self._snapshot is not None else 0
            del self._entries[max(value - offset - 1, 0) :]
        elif kind == _ENTRY:
            self._entries.append(value)
        else:
            assert isinstance(value, HardState)
            self._hard = value
