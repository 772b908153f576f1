"""
A node's Raft log in memory: a snapshot followed by entries.

The log knows its commit and applied indexes, which entries it has already
handed to the driver for persisting (C{handed}), and the membership in
effect at every index: a configuration takes effect as soon as its entry is
in the log (dissertation section 4.1), so the configuration "now" is the one
in the last C{ENTRY_CONFIG} entry, or the snapshot's.
"""

import bisect
from collections.abc import Iterable, Sequence

from minkms.raft.config import EMPTY_CONFIG, ClusterConfig, decode_config
from minkms.raft.errors import InvariantViolation
from minkms.raft.types import ENTRY_CONFIG, Entry, Snapshot


class RaftLog:
    """
    Entries C{offset + 1 .. last_index()} after a snapshot at C{offset}.

    @ivar snapshot: the newest snapshot (meta and data), which the leader
        sends to followers whose next entry is compacted; None before the
        first compaction.
    @ivar unpersisted_snapshot: a snapshot received from the leader and not
        yet handed to the driver.
    @ivar handed: the last index given to the driver in a C{Ready}.
    @ivar stable: the last index known to be on this node's disk (the
        driver persisted the C{Ready} that carried it); the leader counts
        itself towards a quorum only up to here.
    """

    def __init__(self, snapshot: Snapshot | None, entries: Sequence[Entry], commit: int) -> None:
        self.snapshot = snapshot
        self.unpersisted_snapshot: Snapshot | None = None
        self._reset_to(snapshot)
        entries = [e for e in entries if e.index > self.offset]
        _check_contiguous(self.offset, self.offset_term, entries)
        self._append_tail(entries)
        if commit > self.last_index():
            raise InvariantViolation(f"durable commit index {commit} beyond the last entry {self.last_index()}")
        self.committed = max(commit, self.offset)
        self.handed = self.last_index()
        self.stable = self.last_index()

    def _reset_to(self, snapshot: Snapshot | None) -> None:
        meta = snapshot.meta if snapshot is not None else None
        self.offset = meta.index if meta else 0
        self.offset_term = meta.term if meta else 0
        self._base_config = decode_config(meta.config) if meta else EMPTY_CONFIG
        self._entries: list[Entry] = []
        self._config_indexes: list[int] = []
        self._configs: list[ClusterConfig] = []
        self.applied = self.offset

    def _append_tail(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self._entries.append(entry)
            if entry.kind == ENTRY_CONFIG:
                self._config_indexes.append(entry.index)
                self._configs.append(decode_config(entry.data))

    def first_index(self) -> int:
        """The first index still held as an entry."""
        return self.offset + 1

    def last_index(self) -> int:
        """The index of the last entry (or of the snapshot if none follows)."""
        return self.offset + len(self._entries)

    def last_term(self) -> int:
        """The term of the last entry (or of the snapshot if none follows)."""
        return self._entries[-1].term if self._entries else self.offset_term

    def term(self, index: int) -> int | None:
        """The term at C{index}, or None if compacted away or not yet written."""
        if index == self.offset:
            return self.offset_term
        if self.offset < index <= self.offset + len(self._entries):
            return self._entries[index - self.offset - 1].term
        return None

    def match_term(self, index: int, term: int) -> bool:
        """Whether this log has an entry (or the snapshot) at C{index} in C{term}."""
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        """The entry at C{index}, which must be held."""
        return self._entries[index - self.offset - 1]

    def entries_between(self, low: int, high: int) -> list[Entry]:
        """Entries C{low .. high} inclusive, all of which must be held."""
        if high < low:
            return []
        return self._entries[low - self.offset - 1 : high - self.offset]

    def entries_from(self, low: int, max_count: int, size_of: "SizeBudget") -> list[Entry]:
        """
        Entries from C{low} on, at most C{max_count} of them and as many as
        C{size_of} admits, but at least one if any exists.
        """
        start = low - self.offset - 1
        batch = self._entries[start : start + max_count]
        for n, entry in enumerate(batch):
            if n and not size_of.admits(entry):
                return batch[:n]
            size_of.take(entry)
        return batch

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (C{last_index}, C{last_term}) is at least as up to date (5.4.1)."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The first index of C{entries} that this log lacks or holds in another term, or 0."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """
        The largest index <= C{index} whose term is <= C{term}, with its term;
        stops at a compacted index, returning it with term 0.
        """
        while index > 0:
            mine = self.term(index)
            if mine is None:
                return index, 0
            if mine <= term:
                return index, mine
            index -= 1
        return 0, 0

    def append(self, entries: Sequence[Entry]) -> None:
        """
        Write C{entries}, dropping any held entries from the first new index
        on; that index must be after the commit index.
        """
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise InvariantViolation(f"truncating committed entry {first} (commit {self.committed})")
        if not self.offset < first <= self.last_index() + 1:
            raise InvariantViolation(f"appending at {first} leaves a gap after {self.last_index()}")
        if first <= self.last_index():
            del self._entries[first - self.offset - 1 :]
            cut = bisect.bisect_left(self._config_indexes, first)
            del self._config_indexes[cut:]
            del self._configs[cut:]
            self.handed = min(self.handed, first - 1)
            self.stable = min(self.stable, first - 1)
        self._append_tail(entries)

    def maybe_append(self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]) -> int | None:
        """
        Follower side of AppendEntries: if this log matches at
        (C{prev_index}, C{prev_term}), write the entries it does not already
        hold (never truncating for entries that match), advance the commit
        index and return the last index now known to match the leader.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        """Raise the commit index to C{index} (never lowers it); whether it moved."""
        if index <= self.committed:
            return False
        if index > self.last_index():
            raise InvariantViolation(f"commit {index} beyond last index {self.last_index()}")
        self.committed = index
        return True

    def unhanded_entries(self) -> list[Entry]:
        """The entries not yet given to the driver; marks them given."""
        entries = self.entries_between(self.handed + 1, self.last_index())
        self.handed = self.last_index()
        return entries

    def has_unhanded(self) -> bool:
        """Whether some entries wait to be given to the driver."""
        return self.handed < self.last_index() or self.unpersisted_snapshot is not None

    def to_apply(self, upto: int) -> list[Entry]:
        """The committed entries up to C{upto} the state machine has not applied yet."""
        return self.entries_between(self.applied + 1, min(upto, self.committed))

    def restore(self, snapshot: Snapshot) -> None:
        """Replace this log by C{snapshot} (whose last entry it does not hold)."""
        self.snapshot = snapshot
        self.unpersisted_snapshot = snapshot
        self._reset_to(snapshot)
        self.committed = self.offset
        self.handed = self.offset
        self.stable = 0

    def compact(self, snapshot: Snapshot) -> None:
        """Drop the entries that C{snapshot} covers; they must be applied."""
        index = snapshot.meta.index
        if index > self.applied:
            raise InvariantViolation(f"compacting to {index} beyond applied {self.applied}")
        if not self.match_term(index, snapshot.meta.term):
            raise InvariantViolation(f"snapshot at {index} does not match the log")
        kept = self._entries[index - self.offset :]
        applied = self.applied
        self.snapshot = snapshot
        self._reset_to(snapshot)
        self._append_tail(kept)
        self.applied = applied

    def config(self) -> ClusterConfig:
        """The membership in effect: that of the last configuration in the log."""
        return self._configs[-1] if self._configs else self._base_config

    def config_at(self, index: int) -> ClusterConfig:
        """The membership in effect at C{index} (which must be >= offset)."""
        position = bisect.bisect_right(self._config_indexes, index)
        return self._configs[position - 1] if position else self._base_config

    def last_config_index(self) -> int:
        """The index of the last configuration entry held (0: only the snapshot's)."""
        return self._config_indexes[-1] if self._config_indexes else 0


class SizeBudget:
    """How many more entry bytes one Append may carry."""

    def __init__(self, limit: int, per_entry: int) -> None:
        self._left = limit
        self._per_entry = per_entry

    def admits(self, entry: Entry) -> bool:
        """Whether C{entry} still fits."""
        return len(entry.data) + self._per_entry <= self._left

    def take(self, entry: Entry) -> None:
        """Count C{entry} as sent."""
        self._left -= len(entry.data) + self._per_entry


def _check_contiguous(offset: int, offset_term: int, entries: Sequence[Entry]) -> None:
    expected, term = offset + 1, offset_term
    for entry in entries:
        if entry.index != expected or entry.term < term:
            raise InvariantViolation(f"durable log is not contiguous at index {entry.index} (expected {expected})")
        expected, term = expected + 1, entry.term
