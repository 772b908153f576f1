"""
The messages Raft nodes send each other.

Every message names its sender C{src}, its addressee C{dst} and the sender's
C{term}; the term rules of the core (adopt a higher term, answer or ignore a
lower one) apply to all of them except L{ReadIndexRequest}, which is a
request forwarded to the leader and carries term 0.  L{minkms.raft.codec}
turns them into bytes for the peer channel.
"""

import attrs

from minkms.raft.types import Entry, SnapshotMeta, entry_tuple


@attrs.frozen
class Message:
    """What every message has: sender, addressee and the sender's term."""

    src: int
    dst: int
    term: int


@attrs.frozen
class VoteRequest(Message):
    """
    RequestVote, or with C{pre} set a PreVote ("would you vote for me?"),
    which changes no one's term or vote.

    @ivar term: the term the candidate campaigns for (for a PreVote, its
        current term + 1).
    @ivar transfer: the candidate campaigns on the leader's TimeoutNow, so
        voters must not ignore it because they heard from that leader.
    """

    last_index: int = 0
    last_term: int = 0
    pre: bool = False
    transfer: bool = False


@attrs.frozen
class VoteResponse(Message):
    """The answer to a L{VoteRequest} (C{pre} mirrors the request)."""

    pre: bool = False
    granted: bool = False


@attrs.frozen
class Append(Message):
    """
    AppendEntries: C{entries} follow (C{prev_index}, C{prev_term}) in the
    leader's log; C{commit} is the leader's commit index; C{acked} is how
    far the state machine may apply (see L{minkms.raft.lease}).

    C{notice} marks an Append without entries sent to a follower whose log
    the leader already tracks: it only carries C{commit} and C{acked}, and
    the follower answers it only to reject it.  A probe is never a notice:
    it is always answered.
    """

    prev_index: int = 0
    prev_term: int = 0
    commit: int = 0
    entries: tuple[Entry, ...] = attrs.field(default=(), converter=entry_tuple)
    acked: int = 0
    notice: bool = False


@attrs.frozen
class AppendResponse(Message):
    """
    The answer to L{Append} (and to a completed snapshot).

    On success C{index} is the last index known to match the leader's log.
    On rejection C{index} is the rejected C{prev_index} and
    (C{hint_index}, C{hint_term}) is the follower's last entry that may
    match: the largest index <= C{prev_index} whose term is <= the rejected
    C{prev_term}, so the leader can skip a whole conflicting term at once.
    A follower answers once it has persisted what it answers for, so
    C{index} is on its disk.
    """

    index: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@attrs.frozen
class Heartbeat(Message):
    """
    The leader's periodic "I am still here".

    @ivar commit: min(the follower's match index, leader commit).
    @ivar context: the heartbeat round: ReadIndex requests and the leader's
        own read lease count the answers to it.
    @ivar lease_grant: the follower's lease request this heartbeat grants
        (0: none); see L{minkms.raft.lease}.
    @ivar lease_index: with a grant, the follower may serve reads under it
        once it has applied this index.
    @ivar lease_us: with a grant, how long the lease lasts from the moment
        the follower asked for it, in microseconds.
    @ivar acked: how far the state machine may apply (L{minkms.raft.lease}).
    """

    commit: int = 0
    context: int = 0
    lease_grant: int = 0
    lease_index: int = 0
    lease_us: int = 0
    acked: int = 0


@attrs.frozen
class HeartbeatResponse(Message):
    """
    The answer to L{Heartbeat}, echoing its C{context}.

    @ivar lease_request: a new read-lease request (0: none), granted by a
        later heartbeat's C{lease_grant}.
    """

    context: int = 0
    lease_request: int = 0


@attrs.frozen
class InstallSnapshot(Message):
    """
    One chunk of the leader's snapshot: C{data} goes at byte C{offset};
    C{done} marks the last chunk.
    """

    meta: SnapshotMeta = SnapshotMeta()
    offset: int = 0
    data: bytes = b""
    done: bool = False


@attrs.frozen
class SnapshotResponse(Message):
    """
    The follower's acknowledgement of a chunk of the snapshot at C{index}:
    it wants the chunk at C{next_offset} next.
    """

    index: int = 0
    next_offset: int = 0


@attrs.frozen
class TimeoutNow(Message):
    """The leader tells its chosen successor to campaign at once."""


@attrs.frozen
class ReadIndexRequest(Message):
    """A follower asks the leader for a linearizable read index."""

    request_id: bytes = b""


@attrs.frozen
class ReadIndexResponse(Message):
    """
    The leader's answer to L{ReadIndexRequest}: reads are linearizable once
    the asking node has applied C{index}.
    """

    request_id: bytes = b""
    index: int = 0


LEADER_MESSAGES = (Append, Heartbeat, InstallSnapshot)
"""The messages only a leader sends: receiving one names the leader."""
