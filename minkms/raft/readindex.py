"""
Pending ReadIndex requests on the leader.

A read may use the commit index the leader had when the request arrived,
once a majority of voters has confirmed, after that moment, that this node
was still their leader.  Each request gets a sequence number; heartbeats
carry the newest sequence number as their context, and a response with
context C{n} confirms every request numbered C{n} or less.
"""

from collections import deque
from collections.abc import Collection

import attrs

from minkms.raft.quorum import has_quorum


@attrs.define
class PendingRead:
    """
    One read waiting for confirmation.

    @ivar origin: the node that asked (the leader itself or a follower).
    """

    request_id: bytes
    index: int
    origin: int
    seq: int
    acks: set[int] = attrs.field(factory=set)


class ReadIndexQueue:
    """The leader's reads in arrival order, released oldest first."""

    def __init__(self) -> None:
        self._pending: deque[PendingRead] = deque()
        self.last_seq = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, request_id: bytes, index: int, origin: int, self_id: int) -> int:
        """Queue a read at C{index}; its sequence number is the new context."""
        self.last_seq += 1
        self._pending.append(PendingRead(request_id, index, origin, self.last_seq, {self_id}))
        return self.last_seq

    def new_round(self) -> int:
        """A heartbeat round that carries no read (it renews read leases)."""
        self.last_seq += 1
        return self.last_seq

    def confirm(self, node: int, context: int, voters: Collection[int]) -> list[PendingRead]:
        """
        Record that C{node} answered the heartbeat with C{context}; return the
        reads now confirmed by a majority of C{voters}, oldest first.
        """
        newest_confirmed = None
        for read in self._pending:
            if read.seq > context:
                break
            read.acks.add(node)
            if has_quorum(voters, read.acks):
                newest_confirmed = read.seq
        released = []
        while newest_confirmed is not None and self._pending and self._pending[0].seq <= newest_confirmed:
            released.append(self._pending.popleft())
        return released

    def clear(self) -> None:
        """Forget every pending read (this node stopped leading)."""
        self._pending.clear()
