"""
The values the Raft core shares with storage and the node driver.

These are plain, immutable data: the core produces them, the storage layer
persists them (its own byte layout), the driver moves them around.
"""

from collections.abc import Iterable

import attrs

ENTRY_NORMAL = 0
"""A state-machine command; C{data} is opaque to Raft."""

ENTRY_NOOP = 1
"""The empty entry a new leader appends at the start of its term."""

ENTRY_CONFIG = 2
"""A membership change; C{data} is an encoded cluster configuration."""


@attrs.frozen
class Entry:
    """One log entry at (C{index}, C{term})."""

    index: int
    term: int
    kind: int = ENTRY_NORMAL
    data: bytes = b""


def entry_tuple(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    """The converter of every C{entries} field: any iterable of entries, kept as a tuple."""
    return tuple(entries)


@attrs.frozen
class HardState:
    """What a node must persist before it answers any RPC (Raft figure 2)."""

    term: int = 0
    vote: int | None = None
    commit: int = 0


@attrs.frozen
class SnapshotMeta:
    """
    Where a snapshot stands in the log and which membership it carries.

    @ivar config: the encoded cluster configuration as of C{index}.
    """

    index: int = 0
    term: int = 0
    config: bytes = b""


NO_NODE = -1
"""The node id that stands for "nobody": no known leader, no transfer target."""


@attrs.frozen
class Snapshot:
    """
    A state-machine snapshot and where it stands in the log.

    @ivar data: the application's opaque snapshot bytes (the state after
        applying every entry up to C{meta.index}).
    """

    meta: SnapshotMeta
    data: bytes = b""


@attrs.frozen
class DurableState:
    """
    Everything a node has on stable storage: what the core is restored from.

    @ivar entries: the log entries after the snapshot (contiguous, ascending).
    """

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = attrs.field(default=(), converter=entry_tuple)
