"""
The properties every simulated run must keep.

Safety, checked as the run goes: at most one leader per term (Election
Safety); every node applies the same entry at each index, and reaches the
same state-machine digest there, including through snapshots (State
Machine Safety); the committed prefix of every durable log agrees with
what was applied (Log Matching, and committed entries are never lost or
changed).  At the end: every acknowledged write is in every member's
state, and every ReadIndex read saw every write acknowledged before it
started.
"""

from minkms.raft.types import ENTRY_NORMAL, Entry
from minkms.sim.history import OK, READ, WRITE, History, write_id
from minkms.sim.statemachine import decode_write


class SafetyViolation(AssertionError):
    """A run broke a Raft or client-visible guarantee."""


class Checker:
    """
    The run's memory of committed facts.

    @ivar leaders: term -> the node that led it.
    @ivar committed: index -> the entry committed there.
    @ivar digests: index -> the state-machine digest after applying it.
    @ivar write_index: client op id -> the index its write committed at.
    """

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, Entry] = {}
        self.digests: dict[int, bytes] = {}
        self.write_index: dict[int, int] = {}

    def observe_leader(self, node: int, term: int) -> None:
        """C{node} believes it leads C{term}."""
        known = self.leaders.setdefault(term, node)
        if known != node:
            raise SafetyViolation(f"two leaders in term {term}: nodes {known} and {node}")

    def _commit(self, node: int, entry: Entry, how: str) -> None:
        known = self.committed.get(entry.index)
        if known is None:
            self.committed[entry.index] = entry
            if entry.kind == ENTRY_NORMAL:
                self.write_index.setdefault(decode_write(entry.data)[0], entry.index)
        elif known != entry:
            raise SafetyViolation(
                f"node {node} {how} {entry.index}/{entry.term} but "
                f"{known.index}/{known.term} was committed there"
            )

    def on_apply(self, node: int, entry: Entry, digest: bytes) -> None:
        """C{node} applied C{entry} and its state machine digest became C{digest}."""
        self._commit(node, entry, "applied")
        known = self.digests.setdefault(entry.index, digest)
        if known != digest:
            raise SafetyViolation(f"node {node} has a different state after applying {entry.index}")

    def on_restore(self, node: int, index: int, digest: bytes) -> None:
        """C{node} loaded a snapshot taken at C{index}."""
        known = self.digests.setdefault(index, digest)
        if known != digest:
            raise SafetyViolation(
                f"node {node} loaded a snapshot at {index} with a different state"
            )

    def check_durable_log(self, node: int, entries: list[Entry], commit: int) -> None:
        """The committed part of a node's durable log agrees with everyone's."""
        for entry in entries:
            if entry.index > commit:
                break
            self._commit(node, entry, "has committed")

    def check_history(self, history: History, final_states: dict[int, set[int]]) -> None:
        """
        Every acknowledged write is in every member's final state
        (C{final_states}: node -> applied op ids), and every read is at
        least as new as the writes acknowledged before it started.
        """
        writes = [op for op in history.operations if op.kind == WRITE and op.status == OK]
        for op in writes:
            index = self.write_index.get(op.op_id)
            if index is None or index != op.index:
                raise SafetyViolation(
                    f"write {op.op_id} was acknowledged at index {op.index} but committed at {index}"
                )
            for node, applied in final_states.items():
                if op.op_id not in applied:
                    raise SafetyViolation(
                        f"acknowledged write {op.op_id} is missing on node {node}"
                    )
        by_key: dict[str, list] = {}
        for op in writes:
            by_key.setdefault(op.key, []).append(op)
        for read in history.operations:
            if read.kind != READ or read.status != OK:
                continue
            floor = max(
                (w.index for w in by_key.get(read.key, ()) if w.completed < read.invoked),
                default=0,
            )
            seen = 0
            if read.value is not None:
                seen = self.write_index.get(write_id(read.value), -1)
                if seen < 0:
                    raise SafetyViolation(
                        f"read {read.op_id} returned an uncommitted value {read.value}"
                    )
            if seen < floor:
                raise SafetyViolation(
                    f"stale read {read.op_id} of {read.key!r} at node {read.node}: saw the write at "
                    f"index {seen}, but the write at index {floor} was acknowledged before it started"
                )
