"""
What the records of a volume add up to: the durable Raft state.

Pure.  Replaying records in file order gives the state a node restarts
from; the volume also keeps one L{DurableState} up to date as records are
queued, and compaction writes its L{DurableState.records}.
"""

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

import attrs

from minkms.raft.types import Entry, HardState, Snapshot
from minkms.storage.records import Record


def _index(entry: Entry) -> int:
    return entry.index


@attrs.define
class DurableState:
    """
    The latest hard state and snapshot, and the log entries after it.

    C{entries} is always in strictly increasing index order.
    """

    hard_state: HardState = attrs.Factory(HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = attrs.Factory(list)

    def apply(self, record: Record) -> None:
        """
        Fold one record in: an entry at index i first drops every entry at
        i or later; a snapshot drops every entry at or below its index; a
        hard state replaces the previous one.
        """
        if isinstance(record, Entry):
            entries = self.entries
            if entries and entries[-1].index >= record.index:
                del entries[bisect_left(entries, record.index, key=_index) :]
            entries.append(record)
        elif isinstance(record, HardState):
            self.hard_state = record
        elif isinstance(record, Snapshot):
            self.snapshot = record
            entries = self.entries
            if entries and entries[0].index <= record.meta.index:
                del entries[: bisect_right(entries, record.meta.index, key=_index)]
        else:
            raise TypeError(f"not a storage record: {type(record).__name__}")

    def copy(self) -> "DurableState":
        """An independent copy (records themselves are immutable)."""
        return DurableState(self.hard_state, self.snapshot, list(self.entries))

    def records(self) -> list[Record]:
        """The fewest records that L{replay} turns back into this state."""
        out: list[Record] = []
        if self.snapshot is not None:
            out.append(self.snapshot)
        out.extend(self.entries)
        if self.hard_state != HardState():
            out.append(self.hard_state)
        return out


def replay(records: Iterable[Record]) -> DurableState:
    """The state that C{records}, applied in order, leave behind."""
    state = DurableState()
    for record in records:
        state.apply(record)
    return state
