"""
Read leases: how every node answers reads from its own state and still
sees every acknowledged write (DESIGN decision 6; quorum leases, Moraru,
Andersen and Kaminsky, SoCC 2014; Raft thesis section 6.4).

Time is a monotonic clock that the driver injects into the core, in
seconds.  Clocks may run at slightly different rates (at most C{drift}
apart); they need not agree on what time it is.

Three promises make the rule:

 1. The leader's own lease.  Every heartbeat starts a round.  Once a
    majority of voters answered round r, the leader may serve reads until
    C{sent_at(r) + duration}: a majority heard from it after C{sent_at(r)},
    so no later leader was elected before then (one of that majority
    voted for it, after answering).
 2. Follower leases.  A follower asks with every heartbeat answer and
    remembers when it asked.  The leader grants with its next heartbeat:
    "serve reads until you asked + D, once you applied C{lease_index}",
    where D is at most what is left of the leader's own lease, and
    C{lease_index} is the leader's commit index (every write it
    acknowledged so far is at or below it).  From the moment it grants
    until surely after that lease ends, the leader counts the follower as
    a holder and acknowledges a write only once every holder has it in its
    log on disk (the holder's match index); a follower serves a read only
    after applying every entry its log held when the read arrived, so it
    includes every write acknowledged before then, and only once its log
    is known to match the leader's up to C{lease_index} (before that it
    may hold an older term's entries there, which the leader replaces).
    No node applies (so shows) an entry before it is committed and every
    holder has it on disk: the leader tells that frontier (C{acked}) with
    its Appends and heartbeats, so two reads never see a write appear and
    vanish.

    A write is so acknowledged after one round trip to the followers, as
    without leases; the price is on the follower's reads, which wait for
    the leader's next message when they arrive while a write is under way
    (a read that arrives while none is finds its log applied).
 3. A new leader acknowledges nothing until every lease its predecessors
    could have given has run out: each ended with their own lease, which
    began before this election (promise 1), so C{duration} after it, with
    the drift allowance, is enough.

A node whose lease lapsed (or that never had one) confirms a read with
ReadIndex before it answers; see L{minkms.raft.core.RaftCore.read_index}.
"""

import math
from collections.abc import Callable, Collection

import attrs

from minkms.raft import quorum

NEVER = -math.inf
KEEP_REQUESTS = 32
"""Outstanding lease requests a follower remembers (older ones are dropped)."""


@attrs.define
class _Holder:
    """A member the leader counts as holding a lease, and its pending request."""

    until: float = NEVER
    requested: int = 0


class LeaderLeases:
    """
    The leader's side of promises 1-3, for one term.

    @ivar expiry: the leader may serve reads from its own state until then.
    @ivar acks_from: the leader acknowledges no write before then
        (promise 3).
    """

    def __init__(
        self,
        self_id: int,
        duration: float,
        drift: float,
        now: float,
        inherits_leases: bool,
    ) -> None:
        self._self_id = self_id
        self.duration = duration
        self._hold_margin = duration * drift
        self.expiry = NEVER
        self.acks_from = now + duration * (1 + 2 * drift) if inherits_leases else NEVER
        self._rounds: dict[int, float] = {}
        self._answered: dict[int, int] = {}
        self._last_round = 0
        self._members: dict[int, _Holder] = {}

    # -- promise 1 ------------------------------------------------------

    def round_sent(self, seq: int, now: float, voters: Collection[int]) -> None:
        """Heartbeats of round C{seq} leave now."""
        self._rounds[seq] = now
        self._last_round = max(self._last_round, seq)
        self._confirm(voters)

    def round_answered(self, node: int, seq: int, voters: Collection[int]) -> None:
        """C{node} answered the heartbeat of round C{seq}."""
        if seq > self._answered.get(node, 0):
            self._answered[node] = seq
            self._confirm(voters)

    def _confirm(self, voters: Collection[int]) -> None:
        def answered(node: int) -> int:
            return self._last_round if node == self._self_id else self._answered.get(node, 0)

        confirmed = quorum.committed_index(voters, answered)
        sent_at = self._rounds.get(confirmed)
        if sent_at is not None:
            self.expiry = max(self.expiry, sent_at + self.duration)
        for seq in [s for s in self._rounds if s < confirmed]:
            del self._rounds[seq]

    def serves_reads(self, now: float) -> bool:
        """Whether the leader's own lease holds now."""
        return now < self.expiry

    # -- promise 2 ------------------------------------------------------

    def requested(self, node: int, seq: int) -> None:
        """C{node} asked for a lease with request C{seq}."""
        self._members.setdefault(node, _Holder()).requested = seq

    def grant(self, node: int, now: float) -> tuple[int, int]:
        """
        The grant to put in a heartbeat to C{node} leaving now: (request,
        lease in microseconds), or (0, 0).  From now on C{node} is a holder
        until surely after its lease ends.
        """
        holder = self._members.get(node)
        if holder is None or not holder.requested:
            return 0, 0
        seq, holder.requested = holder.requested, 0
        remaining = min(self.duration, self.expiry - now)
        micros = math.floor(remaining * 1e6) if remaining > 0 else 0
        if micros <= 0:
            return 0, 0
        holder.until = max(holder.until, now + micros / 1e6 + self._hold_margin)
        return seq, micros

    def holders(self, now: float) -> list[int]:
        """The members whose lease may still hold (the leader not included)."""
        return sorted(self.held_until(now))

    def held_until(self, now: float) -> dict[int, float]:
        """Member -> until when the leader counts it as a holder (the leader not included)."""
        return {n: h.until for n, h in self._members.items() if h.until > now}

    # -- the acknowledgement rule ---------------------------------------

    def acknowledgeable(self, now: float, committed: int, match_of: Callable[[int], int]) -> int:
        """
        The highest index the leader may acknowledge to a client now:
        committed, and on disk on every holder (C{match_of(node)}: how far
        C{node}'s log is known to match the leader's, as it answered once
        it had persisted it).
        """
        if now < self.acks_from:
            return 0
        index = committed
        for node, holder in self._members.items():
            if holder.until > now:
                index = min(index, match_of(node))
        return index


class FollowerLease:
    """
    A follower's side of promise 2: when it asked, what it was granted.

    @ivar expiry: reads may be served from local state until then...
    @ivar index: ...once this index is applied.
    """

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.expiry = NEVER
        self.index = 0
        self._asked: dict[int, float] = {}
        self._next = 0

    def ask(self, now: float) -> int:
        """A new request, sent now; returns its number."""
        self._next += 1
        self._asked[self._next] = now
        if len(self._asked) > KEEP_REQUESTS:
            del self._asked[min(self._asked)]
        return self._next

    def granted(self, seq: int, index: int, micros: int) -> None:
        """The leader granted request C{seq}."""
        asked_at = self._asked.get(seq)
        if asked_at is None:
            return
        for old in [s for s in self._asked if s <= seq]:
            del self._asked[old]
        self.expiry = max(self.expiry, asked_at + min(self.duration, micros / 1e6))
        self.index = max(self.index, index)

    def read_index(self, now: float) -> int | None:
        """The index to apply before a read now, or None without a lease."""
        return self.index if now < self.expiry else None


def no_clock() -> float:
    """The clock of a core without leases: never consulted for them."""
    raise RuntimeError("read leases need a clock: pass clock= to RaftCore")


Clock = Callable[[], float]
