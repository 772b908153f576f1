"""
The read rule: when a node may answer a read from its own applied state.

 - Under a read lease (L{minkms.raft.lease}), once it has applied what the
   lease asks (on a follower: its whole log as the read found it): every
   acknowledged write is then included.  The hot path: no message, and no
   wait unless a write is under way.
 - Without a lease but with a known leader: after a ReadIndex round with
   the leader, once applied to the index it returns.
 - Without a leader: by the setting C{cluster.reads_without_leader}:
   L{SERVE} answers from the local state once it applied what it knows to
   be committed (MinIO's availability; it may miss writes acknowledged
   since it last heard from a leader, and those being acknowledged then),
   L{REFUSE} answers 503.
"""

import attrs
from twisted.internet import defer

from minkms.errors import unavailable

SERVE = "serve"
REFUSE = "refuse"
POLICIES = (SERVE, REFUSE)

NO_LEADER_REFUSED = "no leader: this node cannot prove its state is fresh and cluster.reads_without_leader is refuse"


@attrs.define
class _Read:
    deferred: defer.Deferred
    index: int | None = None
    unleased: bool = False
    leased: bool = False


class PendingReads:
    """Reads waiting for a ReadIndex answer or for the local apply to catch up."""

    def __init__(self) -> None:
        self._by_request: dict[bytes, _Read] = {}
        self._by_index: list[_Read] = []
        self._next = 0

    def __len__(self) -> int:
        return len(self._by_request) + len(self._by_index)

    def request_id(self) -> bytes:
        """A fresh ReadIndex request id."""
        self._next += 1
        return b"r%d" % self._next

    def wait_index(self, index: int, unleased: bool = False, leased: bool = False) -> defer.Deferred:
        """
        A read to serve once the state has applied C{index}; or, for a read
        under a lease (C{leased}), C{index} or the end of the log if that
        is lower by then (see L{release}).
        """
        read = _Read(defer.Deferred(lambda d: self._forget(d)), index, unleased, leased)
        self._by_index.append(read)
        return read.deferred

    def wait_confirmation(self, request_id: bytes) -> defer.Deferred:
        """A read waiting for the ReadIndex answer to C{request_id}."""
        read = _Read(defer.Deferred(lambda d: self._forget(d)))
        self._by_request[request_id] = read
        return read.deferred

    def confirmed(self, request_id: bytes, index: int) -> None:
        """The leader answered C{request_id}: serve once C{index} is applied."""
        read = self._by_request.pop(request_id, None)
        if read is not None and not read.deferred.called:
            read.index = index
            self._by_index.append(read)

    def unconfirmed(self) -> list[bytes]:
        """The request ids still waiting for a ReadIndex answer."""
        return list(self._by_request)

    def without_leader(self, policy: str, committed: int) -> None:
        """The leader is gone: unconfirmed reads follow C{policy}."""
        reads = list(self._by_request.values())
        self._by_request.clear()
        for read in reads:
            if policy == SERVE:
                read.index, read.unleased = committed, True
                self._by_index.append(read)
            elif not read.deferred.called:
                read.deferred.errback(unavailable(NO_LEADER_REFUSED))

    def release(self, applied: int, log_end: int) -> None:
        """
        Serve the reads whose index is applied (the Deferred fires with True
        if unleased).  A leased read waits at most for the end of the log
        (C{log_end}): a new leader may have replaced the entries it waited
        for, which no one acknowledged (L{minkms.raft.core.RaftCore.lease_read_index}).
        """
        if not self._by_index:
            return
        ready = [r for r in self._by_index if _due(r, log_end) <= applied]
        if not ready:
            return
        self._by_index = [r for r in self._by_index if _due(r, log_end) > applied]
        for read in ready:
            if not read.deferred.called:
                read.deferred.callback(read.unleased)

    def fail_all(self, reason: str) -> None:
        """Answer every waiting read with 503 C{reason}."""
        reads = list(self._by_request.values()) + self._by_index
        self._by_request.clear()
        self._by_index = []
        for read in reads:
            if not read.deferred.called:
                read.deferred.errback(unavailable(reason))

    def _forget(self, d: defer.Deferred) -> None:
        self._by_index = [r for r in self._by_index if r.deferred is not d]
        for request_id, read in list(self._by_request.items()):
            if read.deferred is d:
                del self._by_request[request_id]


def _due(read: _Read, log_end: int):
    """The index C{read} (one that knows its index) waits for, given the end of the log now."""
    return min(read.index, log_end) if read.leased else read.index
