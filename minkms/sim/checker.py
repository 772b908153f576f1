"""
The properties every simulated run must keep.

Safety, checked as the run goes: at most one leader per term (Election
Safety); every node applies the same entry at each index, and reaches the
same state-machine digest there, including through snapshots (State
Machine Safety); the committed prefix of every durable log agrees with
what was applied (Log Matching, and committed entries are never lost or
changed); replicas that applied the same index are in the same state.  At
the end: every acknowledged write is in every member's state, and
replaying the committed log through the state machine's reference model
gives every acknowledged write its answer and every read its result at
the index it was served at, which is no older than any write
acknowledged before the read started (linearizable reads).
"""

import bisect
from collections.abc import Callable

from minkms.raft.types import ENTRY_NORMAL, Entry
from minkms.sim.history import OK, READ, UNANSWERED, WRITE, History, Operation
from minkms.sim.statemachine import Model


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

    def __init__(self, write_id: Callable[[bytes], int]) -> None:
        self._write_id = write_id
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, Entry] = {}
        self.digests: dict[int, object] = {}
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
                self.write_index.setdefault(self._write_id(entry.data), entry.index)
        elif known != entry:
            raise SafetyViolation(
                f"node {node} {how} {entry.index}/{entry.term} but {known.index}/{known.term} was committed there"
            )

    def on_apply(self, node: int, entry: Entry, digest: object) -> None:
        """C{node} applied C{entry} and its state machine digest became C{digest}."""
        self._commit(node, entry, "applied")
        known = self.digests.setdefault(entry.index, digest)
        if known != digest:
            raise SafetyViolation(f"node {node} has a different state after applying {entry.index}")

    def on_restore(self, node: int, index: int, digest: object) -> None:
        """C{node} loaded a snapshot taken at C{index}."""
        known = self.digests.setdefault(index, digest)
        if known != digest:
            raise SafetyViolation(f"node {node} loaded a snapshot at {index} with a different state")

    def check_durable_log(self, node: int, entries: list[Entry], commit: int) -> None:
        """The committed part of a node's durable log agrees with everyone's."""
        for entry in entries:
            if entry.index > commit:
                break
            self._commit(node, entry, "has committed")

    def check_replicas(self, states: dict[int, tuple[int, object]]) -> None:
        """Nodes (C{node -> (applied index, digest)}) at the same index are in the same state."""
        first: dict[int, tuple[int, object]] = {}
        for node, (index, digest) in sorted(states.items()):
            other, known = first.setdefault(index, (node, digest))
            if known != digest:
                raise SafetyViolation(f"nodes {other} and {node} both applied up to {index} but their states differ")

    def check_history(self, history: History, final_states: dict[int, set[int]], model: Model) -> None:
        """
        Every acknowledged write is in every member's final state
        (C{final_states}: node -> applied op ids), and the history agrees
        with C{model} (a fresh one) replayed over the committed log.
        """
        writes = [op for op in history.operations if op.kind == WRITE and op.status == OK]
        for op in writes:
            index = self.write_index.get(op.op_id)
            if index is None or index != op.index:
                raise SafetyViolation(f"write {op.op_id} was acknowledged at index {op.index} but committed at {index}")
            for node, applied in final_states.items():
                if op.op_id not in applied:
                    raise SafetyViolation(f"acknowledged write {op.op_id} is missing on node {node}")
        reads = [op for op in history.operations if op.kind == READ and op.status == OK]
        self._check_read_floors(writes, [op for op in reads if not op.unleased])
        self._replay(model, {op.index: op for op in writes}, reads)

    @staticmethod
    def _check_read_floors(writes: list[Operation], reads: list[Operation]) -> None:
        by_completion = sorted(writes, key=lambda op: op.completed)
        times = [op.completed for op in by_completion]
        floors, highest = [], 0
        for op in by_completion:
            highest = max(highest, op.index)
            floors.append(highest)
        for read in reads:
            before = bisect.bisect_left(times, read.invoked)
            if before and floors[before - 1] > read.index:
                raise SafetyViolation(
                    f"stale read {read.op_id} at node {read.node}: served at index {read.index}, "
                    f"but a write at index {floors[before - 1]} was acknowledged before it started"
                )

    def _replay(self, model: Model, acked: dict[int, Operation], reads: list[Operation]) -> None:
        reads = sorted(reads, key=lambda op: op.index)
        waiting = 0
        for index in range(0, max(self.committed, default=0) + 1):
            if index == 0:
                while waiting < len(reads) and reads[waiting].index == 0:
                    self._check_read(model, reads[waiting], 0)
                    waiting += 1
                continue
            entry = self.committed.get(index)
            if entry is None:
                raise SafetyViolation(f"index {index} was never seen committed, yet later ones were")
            answer = model.apply(entry)
            op = acked.get(index)
            if op is not None and op.answer is not UNANSWERED and op.answer != answer:
                raise SafetyViolation(
                    f"write {op.op_id} at index {index} was answered {op.answer!r}, the model answers {answer!r}"
                )
            while waiting < len(reads) and reads[waiting].index == index:
                self._check_read(model, reads[waiting], index)
                waiting += 1
        if waiting < len(reads):
            read = reads[waiting]
            raise SafetyViolation(f"read {read.op_id} was served at unapplied index {read.index}")

    @staticmethod
    def _check_read(model: Model, read: Operation, index: int) -> None:
        expected = model.read(read.key)
        if read.value != expected:
            raise SafetyViolation(
                f"read {read.op_id} of {read.key!r} at node {read.node}, served at index "
                f"{index}, returned {read.value!r}; the model says {expected!r}"
            )
