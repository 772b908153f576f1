"""
Client writes waiting for their log entry: settled when the entry at their
index is applied, or when a snapshot covers it.  The core lets a node
apply an entry only once it is committed and every lease holder has it on
disk (L{minkms.raft.lease}), so an applied write may be acknowledged.
"""

import collections

import attrs
from twisted.internet import defer

from minkms.errors import unavailable

RECENT_RESULTS = 4096
"""Apply results kept for writes whose waiter arrives after the apply."""

NOT_APPLIED = "leadership changed before the write committed; it was not applied"
UNKNOWN_OUTCOME = "write outcome unknown: it may or may not have been applied; check before retrying"


@attrs.define
class _Waiter:
    term: int
    deferred: defer.Deferred


class WriteWaiters:
    """Deferreds for proposed entries, by log index."""

    def __init__(self) -> None:
        self._waiting: dict[int, list[_Waiter]] = {}
        self._recent: collections.OrderedDict[int, tuple[int, object]] = collections.OrderedDict()

    def __len__(self) -> int:
        return sum(map(len, self._waiting.values()))

    def wait(self, index: int, term: int, applied: int) -> defer.Deferred:
        """A Deferred for the write placed at (C{index}, C{term})."""
        waiter = _Waiter(term, defer.Deferred(lambda d: self._forget(index, d)))
        if index <= applied:
            recent = self._recent.get(index)
            if recent is None:
                waiter.deferred.errback(unavailable(UNKNOWN_OUTCOME))
            else:
                self._settle(waiter, recent[0], recent[1])
            return waiter.deferred
        self._waiting.setdefault(index, []).append(waiter)
        return waiter.deferred

    def on_apply(self, index: int, term: int, result: object) -> None:
        """The entry (C{index}, C{term}) was applied with C{result}."""
        self._recent[index] = (term, result)
        if len(self._recent) > RECENT_RESULTS:
            self._recent.popitem(last=False)
        for waiter in self._waiting.pop(index, ()):
            self._settle(waiter, term, result)

    def on_snapshot(self, index: int, term: int) -> None:
        """
        A snapshot up to (C{index}, C{term}) replaced the state.  A write of
        that same term at or below C{index} is in it (the log up to C{index}
        is that term's leader's); one of a later term is not; of an earlier
        term, nobody here can tell.
        """
        self._recent.clear()
        for placed in sorted(i for i in self._waiting if i <= index):
            for waiter in self._waiting.pop(placed):
                if waiter.term == term:
                    self._settle(waiter, term, None)
                elif waiter.term > term:
                    _fail(waiter, NOT_APPLIED)
                else:
                    _fail(waiter, UNKNOWN_OUTCOME)

    def fail_all(self, reason: str) -> None:
        """Answer every waiting write with 503 C{reason}."""
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for waiter in waiters:
                _fail(waiter, reason)

    def _settle(self, waiter: _Waiter, term: int, result: object) -> None:
        if waiter.deferred.called:
            return
        if term != waiter.term:
            _fail(waiter, NOT_APPLIED)
        else:
            waiter.deferred.callback(result)

    def _forget(self, index: int, d: defer.Deferred) -> None:
        kept = [w for w in self._waiting.get(index, ()) if w.deferred is not d]
        if kept:
            self._waiting[index] = kept
        else:
            self._waiting.pop(index, None)


def _fail(waiter: _Waiter, reason: str) -> None:
    if not waiter.deferred.called:
        waiter.deferred.errback(unavailable(reason))
