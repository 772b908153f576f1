"""
What the leader knows about one follower's log, and how fast it may send.

A follower's progress is in one of three states (as in etcd-io/raft):
L{PROBE} sends one Append at a time until a response shows where the logs
match; L{REPLICATE} streams Appends optimistically, at most C{max_inflight}
unacknowledged at once; L{SNAPSHOT} sends the leader's snapshot chunk by
chunk, stop-and-wait, because the entries the follower needs are compacted.
"""

from collections import deque

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


class Progress:
    """
    The leader's view of one member.

    @ivar match: the highest index known to be on the member's disk and
        equal to the leader's entry.
    @ivar next: the next index to send.
    @ivar probe_sent: in L{PROBE}, an Append is outstanding.
    @ivar inflight: in L{REPLICATE}, the last index of each unacknowledged
        Append, oldest first.
    @ivar snapshot_index: in L{SNAPSHOT}, the index of the snapshot sent.
    @ivar snapshot_offset: in L{SNAPSHOT}, the next byte to send.
    @ivar recent_active: heard from since the last CheckQuorum round.
    @ivar last_ack: the leader's tick count when the member last answered an
        Append or snapshot chunk, or when a pipeline started; what is in
        flight for too long after it is taken as lost.
    @ivar last_heard: the leader's tick count when the member last answered.
    """

    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflight",
        "snapshot_index",
        "snapshot_offset",
        "recent_active",
        "last_ack",
        "last_heard",
    )

    def __init__(self, next_index: int, now: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()
        self.snapshot_index = 0
        self.snapshot_offset = 0
        self.recent_active = True
        self.last_ack = now
        self.last_heard = now

    def become_probe(self) -> None:
        """Find the match point again, one Append at a time."""
        if self.state == SNAPSHOT:
            self.next = max(self.match + 1, self.snapshot_index + 1)
        else:
            self.next = self.match + 1
        self.state = PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot_index = 0
        self.snapshot_offset = 0

    def become_replicate(self) -> None:
        """Stream entries from just after the match point."""
        self.state = REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot_index = 0
        self.snapshot_offset = 0

    def become_snapshot(self, snapshot_index: int) -> None:
        """Send the snapshot at C{snapshot_index} from its first byte."""
        self.state = SNAPSHOT
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot_index = snapshot_index
        self.snapshot_offset = 0

    def is_paused(self, max_inflight: int) -> bool:
        """Whether the leader must wait for an answer before sending entries."""
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def sent(self, last_index: int, now: int) -> None:
        """Record an Append whose entries end at C{last_index} (0: no entries)."""
        if self.state == REPLICATE:
            if last_index:
                if not self.inflight:
                    self.last_ack = now
                self.next = last_index + 1
                self.inflight.append(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """A success answer up to C{index}; whether C{match} moved."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, match_hint: int) -> bool:
        """
        A rejection of the Append after C{rejected}; move C{next} back using
        the follower's hint.  Returns False for a stale rejection.
        """
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
