"""
What the core hands to its driver: L{Ready} batches of work, and L{Status}.

The driver loop (see L{minkms.raft.core} for the full contract)::

    rd = core.ready()
    send(rd.send_first)
    persist(rd.snapshot, rd.entries, rd.hard_state); fsync if rd.must_sync
    send(rd.messages)
    install(rd.snapshot); apply(rd.committed_entries); serve(rd.read_states)
    core.advance(rd)

A message may always leave later than this order says: the driver sends
those of a Ready that needs no fsync only after applying it, so that
the clients' answers go first.
"""

from collections.abc import Mapping

import attrs

from minkms.raft.config import ClusterConfig
from minkms.raft.messages import Message
from minkms.raft.types import Entry, HardState, Snapshot

FOLLOWER = "Follower"
PRE_CANDIDATE = "PreCandidate"
CANDIDATE = "Candidate"
LEADER = "Leader"


@attrs.frozen
class SoftState:
    """Volatile facts the driver may want to show or act on."""

    role: str
    leader: int
    term: int


@attrs.frozen
class ReadState:
    """
    A linearizable read may be served once the node has applied C{index}.

    @ivar request_id: the id the driver passed to C{read_index}.
    """

    request_id: bytes
    index: int


@attrs.frozen
class Ready:
    """
    One batch of work for the driver.

    @ivar hard_state: the term, vote and commit to persist, or None if they
        did not change since the last Ready.
    @ivar entries: entries to write; the first may overwrite: drop every
        persisted entry at or after C{entries[0].index} first.
    @ivar snapshot: a snapshot received from the leader: persist it in place
        of the whole log (before C{entries}) and load it into the state
        machine (before applying C{committed_entries}); or None.
    @ivar committed_entries: entries to apply, in order, exactly once.
    @ivar messages: to send only after persisting this Ready.
    @ivar send_first: the leader's messages of a term it has persisted
        (appends, heartbeats, snapshot chunks, TimeoutNow, ReadIndex
        answers): they promise nothing about this node's disk, so they go
        out before persisting, in parallel with the leader's own write
        (Raft thesis 10.2.1; the leader counts itself towards a quorum only
        for what it persisted).
    @ivar read_states: reads to serve once applied >= their index.
    @ivar must_sync: whether persisting this Ready requires an fsync
        (entries, snapshot, term or vote changed; a commit-only change
        does not).
    @ivar soft_state: role, leader and term after this Ready.
    """

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    must_sync: bool
    soft_state: SoftState
    send_first: tuple[Message, ...] = ()


@attrs.frozen
class PeerStatus:
    """The leader's view of one member, for C{minkms stat}."""

    match: int
    next: int
    state: str
    learner: bool
    recent_active: bool
    last_heard_age: int


@attrs.frozen
class Status:
    """
    A node's consensus state, for C{minkms stat} and for the driver.

    @ivar leader: the known leader's id, or -1.
    @ivar leader_contact_age: ticks since this node last heard from its
        leader (0 on the leader itself), or None if it never did.
    @ivar progress: per member (leader only): match/next and liveness.
    """

    node_id: int
    role: str
    leader: int
    term: int
    vote: int | None
    commit: int
    applied: int
    first_index: int
    last_index: int
    snapshot_index: int
    config: ClusterConfig
    leader_contact_age: int | None
    transfer_target: int
    progress: Mapping[int, PeerStatus]
