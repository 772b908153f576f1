"""
Client operations and their recorded outcomes.

An operation is invoked at a virtual time and completes as C{ok} (the
client was told it happened), C{fail} (it certainly did not happen) or
C{unknown} (the client cannot tell: its node crashed or it timed out); the
checker treats C{unknown} writes as possibly applied.
"""

import attrs

WRITE = "write"
READ = "read"

PENDING = "pending"
OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"

UNANSWERED = "(not answered)"


@attrs.define
class Operation:
    """
    One client request and what became of it.

    @ivar value: for a write, the (unique) value written; for a read, the
        value returned.
    @ivar index: for a write, the log index it was proposed at; for a
        read, the applied index of the state it was served from.
    @ivar answer: for a write acknowledged when its node applied it, what
        the state machine answered (L{UNANSWERED} otherwise).
    @ivar data: for a write, the entry data of its last proposal (None if
        it was never proposed), so that a checker can tell what a write of
        unknown outcome would have done.
    @ivar unleased: for a read, it was served without a lease or a leader
        (C{reads_without_leader: serve}): it must show a state the log went
        through, but it may be stale.
    """

    op_id: int
    client: int
    kind: str
    key: str
    node: int
    invoked: int
    value: str | None = None
    index: int | None = None
    status: str = PENDING
    completed: int | None = None
    answer: object = UNANSWERED
    data: bytes | None = None
    unleased: bool = False

    def finish(self, status: str, now: int, value: str | None = None) -> None:
        """Record the outcome, once; later outcomes are ignored."""
        if self.status != PENDING:
            return
        self.status = status
        self.completed = now
        if self.kind == READ:
            self.value = value


class History:
    """Every operation of a run, in invocation order."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []
        self._next_id = 1

    def invoke(self, client: int, kind: str, key: str, node: int, now: int, padding: int = 0) -> Operation:
        """
        Start recording a new operation; a write gets a unique value,
        C{v<op id>}, followed by C{padding} filler bytes if asked.
        """
        op = Operation(self._next_id, client, kind, key, node, now)
        if kind == WRITE:
            op.value = f"v{self._next_id}" + ("." + "x" * padding if padding else "")
        self._next_id += 1
        self.operations.append(op)
        return op

    def recording(self, workload):
        """C{workload}, noting on each write the entry data it is proposed as."""
        return _RecordingWorkload(workload)

    def counts(self) -> dict[str, int]:
        """How many operations ended in each way, by kind."""
        result: dict[str, int] = {}
        for op in self.operations:
            name = f"{op.kind}_{op.status}"
            result[name] = result.get(name, 0) + 1
        return result


class _RecordingWorkload:
    """A workload that remembers, on the operation, what it encoded for it."""

    def __init__(self, workload) -> None:
        self._workload = workload

    def encode(self, op: Operation, now: int) -> bytes:
        op.data = self._workload.encode(op, now)
        return op.data

    def write_id(self, data: bytes) -> int:
        return self._workload.write_id(data)
