"""
The pure Raft consensus core, in the style of etcd-io/raft.

L{RaftCore} takes inputs and produces L{Ready} batches; it never touches a
clock, a socket, a file or a global random generator, so a driver (the
Twisted node, or the simulator) decides when things happen.

Inputs::

    core = RaftCore(node_id, durable_state, random.Random(seed), RaftOptions())
    core.tick()                          # one abstract time unit passed
    core.campaign()                      # start an election at once
    core.step(message)                   # a message from a peer
    index = core.propose(data)           # leader only, else NotLeader(leader_id)
    index = core.propose_config(change)  # a single-server membership change
    core.transfer_leadership(node_id)    # hand leadership to a caught-up voter
    core.read_index(request_id)          # ask for a linearizable read index
    snapshot = core.compact(index, data) # the state machine's snapshot at index

Outputs: C{core.has_ready()}, C{core.ready() -> Ready}, C{core.advance(ready)}
and C{core.status()}.

The driver contract, per Ready (Raft figure 2; etcd-io/raft README):

 0. Send C{rd.send_first} (the leader's messages; they need nothing of
    this Ready on disk).  Between Readys, C{core.early_messages()} hands
    such messages over at once, so heartbeats never wait for a disk.
 1. Persist: if C{rd.snapshot}, replace the stored log by it; write
    C{rd.entries}, first dropping stored entries at or after
    C{rd.entries[0].index}; write C{rd.hard_state} if not None.  If
    C{rd.must_sync}, fsync before going on.
 2. Only then send C{rd.messages} (and only then tell any client anything).
 3. If C{rd.snapshot}, load it into the state machine; apply
    C{rd.committed_entries} in order, exactly once (configuration entries
    too: the state machine keeps the membership); serve C{rd.read_states}
    once the state machine has applied their index.
 4. Call C{core.advance(rd)} before the next C{core.ready()}.  C{tick},
    C{step} and the proposals may be called while a Ready is being
    processed.

A node restarts from what it persisted: C{DurableState(hard_state, snapshot,
entries)}.  Its state machine starts from that snapshot; the core hands the
committed entries after it again.  After C{compact(index, data)} the driver
persists the returned snapshot and may then drop stored entries <= index.

A brand-new cluster starts from L{bootstrap_state}; a node that will join an
existing cluster starts from an empty C{DurableState()} and waits for the
leader to send it the log or a snapshot.  A node whose configuration no
longer names it stays a follower that never campaigns (a removed leader
steps down once its removal commits); the driver decides when to stop it.
"""

import random

import attrs

from minkms.raft import codec, quorum
from minkms.raft.config import ClusterConfig, ConfigChange, encode_config
from minkms.raft.errors import (
    ConfigChangeRejected,
    InvariantViolation,
    NotLeader,
    ProposalDropped,
)
from minkms.raft.lease import Clock, FollowerLease, LeaderLeases, no_clock
from minkms.raft.log import RaftLog, SizeBudget
from minkms.raft.messages import (
    LEADER_MESSAGES,
    Append,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from minkms.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from minkms.raft.readindex import ReadIndexQueue
from minkms.raft.ready import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    PeerStatus,
    ReadState,
    Ready,
    SoftState,
    Status,
)
from minkms.raft.types import (
    ENTRY_CONFIG,
    ENTRY_NOOP,
    ENTRY_NORMAL,
    NO_NODE,
    DurableState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)

MAX_SNAPSHOT_CHUNK = 32 * 1024

_SENT_BEFORE_PERSISTING = LEADER_MESSAGES + (TimeoutNow, ReadIndexResponse)
"""What a leader sends that promises nothing about its own disk."""


def _check_append_bytes(instance: "RaftOptions", attribute: "attrs.Attribute[int]", value: int) -> None:
    if codec.append_size(value, 0) > codec.MAX_MESSAGE_BYTES:
        raise ValueError(f"max_append_bytes {value} would exceed {codec.MAX_MESSAGE_BYTES}")


def _check_chunk(instance: "RaftOptions", attribute: "attrs.Attribute[int]", value: int) -> None:
    if not 0 < value <= MAX_SNAPSHOT_CHUNK:
        raise ValueError(f"snapshot_chunk_bytes must be in 1..{MAX_SNAPSHOT_CHUNK}")


@attrs.frozen
class RaftOptions:
    """
    Tunables of one node.

    @ivar election_ticks: T; followers wait a random [T, 2T) ticks without
        a leader before campaigning, and a CheckQuorum round lasts T.
    @ivar heartbeat_ticks: ticks between leader heartbeats (<< T).
    @ivar pre_vote: campaign with a PreVote round first (section 9.6).
    @ivar check_quorum: the leader steps down without a live majority, and
        nodes ignore votes while their leader is live.
    @ivar max_append_bytes: entry bytes (with per-entry framing) in one Append.
    @ivar max_entry_bytes: the largest entry a proposal may carry; an entry
        larger than C{max_append_bytes} travels alone in its Append (the
        peer channel splits messages over AMP values).
    @ivar max_append_entries: entries in one Append.
    @ivar max_inflight: unacknowledged Appends per follower.
    @ivar max_uncommitted_bytes: the leader refuses proposals beyond this
        much uncommitted data (when it has lost its quorum).
    @ivar snapshot_chunk_bytes: snapshot bytes per InstallSnapshot chunk.
    @ivar retransmit_ticks: how long Appends or a snapshot chunk may stay
        unanswered, while heartbeats are answered, before they are resent.
    @ivar auto_promote_lag: if set, the leader promotes a learner whose
        match index is within this many entries of its last index.
    @ivar read_lease: seconds of a read lease (L{minkms.raft.lease}); 0
        turns leases off (every write is acknowledgeable once committed,
        and no node serves reads without ReadIndex).
    @ivar clock_drift: how far apart two nodes' clock rates may be, as a
        fraction; leases are held that much longer than granted.
    """

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_append_bytes: int = attrs.field(default=48 * 1024, validator=_check_append_bytes)
    max_entry_bytes: int = 64 * 1024 * 1024
    max_append_entries: int = 256
    max_inflight: int = 16
    max_uncommitted_bytes: int = 16 * 1024 * 1024
    snapshot_chunk_bytes: int = attrs.field(default=MAX_SNAPSHOT_CHUNK, validator=_check_chunk)
    retransmit_ticks: int = 5
    auto_promote_lag: int | None = None
    read_lease: float = 0.0
    clock_drift: float = 0.01

    def __attrs_post_init__(self) -> None:
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks")


def bootstrap_state(config: ClusterConfig) -> DurableState:
    """
    The durable state that founds a cluster: one committed configuration
    entry at index 1.  Every founding member must start from the same one.
    """
    entry = Entry(1, 1, ENTRY_CONFIG, encode_config(config))
    return DurableState(HardState(term=1, vote=None, commit=1), None, (entry,))


@attrs.define
class _PartialSnapshot:
    source: int
    term: int
    meta: SnapshotMeta
    chunks: list[bytes]
    size: int

    def continues(self, chunk: InstallSnapshot) -> bool:
        return (self.source, self.term, self.meta) == (chunk.src, chunk.term, chunk.meta)


class RaftCore:
    """
    One node's Raft state machine: see the module docstring for the API and
    the driver contract.
    """

    def __init__(
        self,
        node_id: int,
        durable: DurableState,
        rng: random.Random,
        options: RaftOptions = RaftOptions(),
        clock: Clock = no_clock,
    ) -> None:
        self.id = node_id
        self._rng = rng
        self.options = options
        self._clock = clock
        self._leader_leases: LeaderLeases | None = None
        self._follower_lease = FollowerLease(options.read_lease) if options.read_lease else None
        self._leader_matched = 0
        self._acked = durable.hard_state.commit
        hard = durable.hard_state
        self.term = hard.term
        self.vote = hard.vote
        self.log = RaftLog(durable.snapshot, durable.entries, hard.commit)
        self.config = self.log.config()
        self.role = FOLLOWER
        self.leader = NO_NODE
        self._ticks = 0
        self._leader_heard_tick: int | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = options.election_ticks
        self._votes: dict[int, bool] = {}
        self._progress: dict[int, Progress] = {}
        self._transfer_target = NO_NODE
        self._term_start_index = 0
        self._reads = ReadIndexQueue()
        self._reads_before_commit: list[tuple[bytes, int]] = []
        self._uncommitted_bytes = 0
        self._send_pending = False
        self._commit_to_broadcast = False
        self._partial_snapshot: _PartialSnapshot | None = None
        self._messages: list[Message] = []
        self._early: list[Message] = []
        self._persisted_term = hard.term
        self._read_states: list[ReadState] = []
        self._handed_hard_state = hard
        self._handed_soft_state: SoftState | None = None
        self._outstanding: Ready | None = None
        self._reset_election_timer()

    # -- inputs ---------------------------------------------------------

    def tick(self) -> None:
        """One unit of logical time passed."""
        self._ticks += 1
        if self.role == LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def step(self, message: Message) -> None:
        """Handle a message from a peer (addressed to this node)."""
        if message.dst != self.id:
            return
        if isinstance(message, ReadIndexRequest):
            self._step_read_request(message)
            return
        if message.term > self.term:
            if not self._accept_higher_term(message):
                return
        elif message.term < self.term:
            self._answer_stale(message)
            return
        if isinstance(message, VoteRequest):
            self._step_vote_request(message)
        elif isinstance(message, TimeoutNow):
            if self.role != LEADER and message.src == self.leader:
                self._campaign(transfer=True)
        elif isinstance(message, ReadIndexResponse):
            self._read_states.append(ReadState(message.request_id, message.index))
        elif self.role == LEADER:
            self._step_leader(message)
        elif self.role in (CANDIDATE, PRE_CANDIDATE):
            self._step_candidate(message)
        else:
            self._step_follower(message)

    def campaign(self) -> None:
        """Start an election now, as if the election timeout had elapsed."""
        if self.role != LEADER:
            self._campaign()

    def propose(self, data: bytes) -> int:
        """
        Append a state-machine command; returns its log index.  It is
        committed once it shows up in C{Ready.committed_entries} at that
        index (a different entry there means it was lost).

        @raise NotLeader: with the leader this node knows of.
        @raise ProposalDropped: during a leadership transfer, when too much
            is uncommitted, or when C{data} cannot fit one message.
        """
        self._check_proposal(len(data))
        return self._append_as_leader([(ENTRY_NORMAL, data)])

    def seen_index(self) -> int:
        """
        How far a leader's state must be applied before it checks a new
        write against it: every entry a client may have seen acknowledged.
        Of earlier terms that is all of them, up to this term's first entry
        (a predecessor acknowledged some, and this leader applies them only
        once their leases ran out); of this term, what may be applied
        (L{exposable}), since nothing beyond it was shown anywhere.  A write
        checked against less could be refused wrongly; entries beyond it
        need no wait, as applying an entry checks it again.
        """
        return min(self.log.committed, max(self._term_start_index, self.exposable()))

    def propose_config(self, change: ConfigChange) -> int:
        """
        Append a single-server membership change; returns its log index.
        The new membership takes effect at once on every node that holds the
        entry.  If the leader removes itself it keeps leading until the
        change commits, then steps down.

        @raise ConfigChangeRejected: before the leader committed an entry of
            its term (the raft-dev 2015 fix), while another change is
            uncommitted, or if the change does not fit the membership.
        """
        self._check_proposal(0)
        if self.log.committed < self._term_start_index:
            raise ConfigChangeRejected("the leader has not committed an entry in its term yet")
        if self.log.last_config_index() > self.log.committed:
            raise ConfigChangeRejected("another membership change is not committed yet")
        new_config = change.apply(self.config)
        return self._append_as_leader([(ENTRY_CONFIG, encode_config(new_config))])

    def transfer_leadership(self, target: int) -> None:
        """
        Hand leadership to the voter C{target}: stop taking proposals, bring
        it up to date, then tell it to campaign (TimeoutNow).  Gives up after
        an election timeout.
        """
        if self.role != LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            self._transfer_target = NO_NODE
            return
        if target not in self.config.voters or target not in self._progress:
            raise ConfigChangeRejected(f"node {target} is not a voter")
        if self._transfer_target == target:
            return
        self._transfer_target = target
        self._election_elapsed = 0
        if self._progress[target].match == self.log.last_index():
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._send_pending = True

    def read_index(self, request_id: bytes) -> None:
        """
        Ask for a linearizable read: a C{ReadState(request_id, index)} comes
        out of a later Ready once the leader confirmed its leadership with a
        majority.  May never come (lost messages, lost leadership): the
        driver times out.

        @raise NotLeader: when no leader is known.
        """
        if self.role == LEADER:
            self._start_read(request_id, self.id)
        elif self.leader != NO_NODE:
            self._send(ReadIndexRequest(self.id, self.leader, 0, request_id))
        else:
            raise NotLeader(NO_NODE)

    def lease_read_index(self) -> int | None:
        """
        The index this node must have applied to answer a read from its own
        state now, seeing every acknowledged write and every write another
        node may have shown; None when it holds no read lease (then use
        L{read_index}, or without a leader the driver's policy).  See
        L{minkms.raft.lease}.

        On a follower it is the end of its log: every such write is on its
        disk.  The entries after the last acknowledged write may still be
        replaced by a later leader, so a read waiting for them may settle
        for the end of the log as it is then (see
        L{minkms.driver.reads.PendingReads.release}): the acknowledged
        writes are committed and stay.  A follower whose log is not yet
        known to match the leader's up to what its lease covers reads by
        ReadIndex instead: until the leader's Appends reach it, its log may
        hold entries of an older term there, which the leader replaces,
        and its end may then fall below writes acknowledged before the read.
        """
        if not self.options.read_lease:
            return None
        now = self._clock()
        if self.role == LEADER:
            leases = self._leader_leases
            if leases is None or not leases.serves_reads(now):
                return None
            if self.log.term(self.log.committed) != self.term:
                return None
            return max(self._term_start_index, self.exposable())
        if self._follower_lease is None:
            return None
        index = self._follower_lease.read_index(now)
        if index is None or index > max(self.log.committed, self._leader_matched):
            return None
        return self.log.last_index()

    def exposable(self) -> int:
        """
        How far the state machine may apply now: committed entries that
        every lease holder has on disk (L{minkms.raft.lease}), so that no
        node shows a write another lease holder could miss.  A leader
        acknowledges a write once it applied it.
        """
        if not self.options.read_lease:
            return self.log.committed
        self._advance_acked()
        return min(self.log.committed, self._acked)

    def _advance_acked(self) -> None:
        """
        On a leader under leases, move the acknowledgement frontier to what
        every lease holder has on disk now; the followers hear of a move in
        the next Append (a notice if nothing else goes).
        """
        leases = self._leader_leases
        if self.role == LEADER and leases is not None:
            acked = leases.acknowledgeable(self._clock(), self.log.committed, self._match_of)
            if acked > self._acked:
                self._acked = acked
                self._commit_to_broadcast = True

    def read_leases(self) -> dict[int, float]:
        """
        Node -> seconds left on a read lease this node knows of: on the
        leader its own and each holder's (as the leader holds it), on a
        follower its own.
        """
        if not self.options.read_lease:
            return {}
        now = self._clock()
        if self.role == LEADER and self._leader_leases is not None:
            leases = self._leader_leases
            left = {n: until - now for n, until in leases.held_until(now).items()}
            if leases.serves_reads(now):
                left[self.id] = leases.expiry - now
            return left
        lease = self._follower_lease
        if lease is not None and lease.read_index(now) is not None:
            return {self.id: lease.expiry - now}
        return {}

    def lease_holders(self) -> list[int]:
        """The members whose read lease from this leader may still hold."""
        if self.role != LEADER or self._leader_leases is None:
            return []
        return self._leader_leases.holders(self._clock())

    def compact(self, index: int, data: bytes) -> Snapshot:
        """
        Take the state machine's snapshot C{data}, made after applying
        exactly C{index}; drop the log up to it and send it to followers
        that lag behind.  Returns the snapshot for the driver to persist.
        """
        if self.log.snapshot is not None and index <= self.log.offset:
            return self.log.snapshot
        term = self.log.term(index)
        if term is None or index > self.log.applied:
            raise ValueError(f"cannot compact to {index} (applied {self.log.applied})")
        meta = SnapshotMeta(index, term, encode_config(self.log.config_at(index)))
        snapshot = Snapshot(meta, bytes(data))
        self.log.compact(snapshot)
        return snapshot

    # -- outputs --------------------------------------------------------

    def has_ready(self) -> bool:
        """
        Whether C{ready()} would have anything for the driver (always False
        while a Ready awaits C{advance()}).
        """
        if self._outstanding is not None:
            return False
        return bool(
            self._messages
            or self._early
            or self._read_states
            or self._send_pending
            or self._commit_to_broadcast
            or self.log.has_unhanded()
            or self.exposable() > self.log.applied
            or self._hard_state() != self._handed_hard_state
            or self._soft_state() != self._handed_soft_state
        )

    def ready(self) -> Ready:
        """The next batch of work; see the module docstring for what to do with it."""
        if self._outstanding is not None:
            raise RuntimeError("advance() the previous Ready before asking for another")
        # What may be applied first: it can move the stored commit (the
        # lease holders' acknowledgement), which then goes in this Ready.
        exposable = self.exposable()
        self._flush_appends()
        snapshot = self.log.unpersisted_snapshot
        self.log.unpersisted_snapshot = None
        entries = tuple(self.log.unhanded_entries())
        hard = self._hard_state()
        previous = self._handed_hard_state
        soft = self._soft_state()
        ready = Ready(
            hard_state=hard if hard != previous else None,
            entries=entries,
            snapshot=snapshot,
            committed_entries=tuple(self.log.to_apply(exposable)),
            messages=tuple(self._messages),
            read_states=tuple(self._read_states),
            must_sync=bool(entries or snapshot or hard.term != previous.term or hard.vote != previous.vote),
            soft_state=soft,
            send_first=self.early_messages(),
        )
        self._messages = []
        self._read_states = []
        self._handed_hard_state = hard
        self._handed_soft_state = soft
        self._outstanding = ready
        return ready

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied C{ready}."""
        if ready is not self._outstanding:
            raise RuntimeError("advance() takes the Ready last returned by ready()")
        self._outstanding = None
        self.log.stable = self.log.handed
        if ready.hard_state is not None:
            self._persisted_term = ready.hard_state.term
        own = self._progress.get(self.id) if self.role == LEADER else None
        if own is not None and own.maybe_update(self.log.stable):
            self._maybe_commit()
        if ready.committed_entries:
            self.log.applied = max(self.log.applied, ready.committed_entries[-1].index)
        if ready.snapshot is not None:
            self.log.applied = max(self.log.applied, ready.snapshot.meta.index)

    def status(self) -> Status:
        """A consistent picture of this node, for C{minkms stat}."""
        progress = {}
        if self.role == LEADER:
            for node, pr in sorted(self._progress.items()):
                progress[node] = PeerStatus(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    learner=node in self.config.learners,
                    recent_active=pr.recent_active,
                    last_heard_age=0 if node == self.id else self._ticks - pr.last_heard,
                )
        if self.role == LEADER:
            contact_age: int | None = 0
        elif self._leader_heard_tick is None:
            contact_age = None
        else:
            contact_age = self._ticks - self._leader_heard_tick
        return Status(
            node_id=self.id,
            role=self.role,
            leader=self.leader,
            term=self.term,
            vote=self.vote,
            commit=self.log.committed,
            applied=self.log.applied,
            first_index=self.log.first_index(),
            last_index=self.log.last_index(),
            snapshot_index=self.log.offset,
            config=self.config,
            leader_contact_age=contact_age,
            transfer_target=self._transfer_target,
            progress=progress,
        )

    def _hard_state(self) -> HardState:
        # With leases the stored commit is what may be applied (a restarted
        # node applies that much before it hears from a leader again).
        commit = self.log.committed
        if self.options.read_lease:
            commit = min(commit, self._acked)
        return HardState(self.term, self.vote, commit)

    def _soft_state(self) -> SoftState:
        return SoftState(self.role, self.leader, self.term)

    def early_messages(self) -> tuple[Message, ...]:
        """
        Take the messages that may leave before anything is persisted (see
        L{Ready.send_first}); a driver busy persisting sends them at once.
        On a leader they carry what every lease holder now has: while its
        own disk is slow, the followers still apply what a majority
        committed, and their reads do not wait for the leader's write.
        """
        self._advance_acked()
        if self._commit_to_broadcast:
            self._flush_appends()
        early, self._early = tuple(self._early), []
        return early

    def _send(self, message: Message) -> None:
        if (
            self.role == LEADER
            and message.term == self._persisted_term
            and isinstance(message, _SENT_BEFORE_PERSISTING)
        ):
            self._early.append(message)
        else:
            self._messages.append(message)

    # -- roles ----------------------------------------------------------

    def _promotable(self) -> bool:
        return self.id in self.config.voters

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        ticks = self.options.election_ticks
        self._randomized_timeout = ticks + self._rng.randrange(ticks)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = NO_NODE
        self._heartbeat_elapsed = 0
        self._reset_election_timer()
        self._votes = {}
        self._progress = {}
        self._transfer_target = NO_NODE
        self._reads.clear()
        self._reads_before_commit = []
        self._uncommitted_bytes = 0
        self._send_pending = False
        self._commit_to_broadcast = False
        self._partial_snapshot = None
        self._leader_leases = None
        self._leader_matched = 0

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = FOLLOWER
        self.leader = leader

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = LEADER
        self.leader = self.id
        last = self.log.last_index()
        for node in sorted(self.config.members):
            self._progress[node] = Progress(last + 1, self._ticks)
        if self.id in self._progress:
            self._progress[self.id].become_replicate()
            self._progress[self.id].maybe_update(self.log.stable)
        if self.options.read_lease:
            alone = self.config.members == {self.id}
            self._leader_leases = LeaderLeases(
                self.id,
                self.options.read_lease,
                self.options.clock_drift,
                self._clock(),
                inherits_leases=not alone,
            )
        self._term_start_index = self._append_as_leader([(ENTRY_NOOP, b"")])
        if self._leader_leases is not None:
            self._broadcast_heartbeat()

    def _campaign(self, transfer: bool = False, pre_vote_won: bool = False) -> None:
        if not self._promotable():
            return
        if self.options.pre_vote and not transfer and not pre_vote_won:
            self._reset(self.term)
            self.role = PRE_CANDIDATE
            vote_term = self.term + 1
        else:
            self._reset(self.term + 1)
            self.role = CANDIDATE
            self.vote = self.id
            vote_term = self.term
        pre = self.role == PRE_CANDIDATE
        self._votes[self.id] = True
        if self._tally_votes():
            return
        for node in sorted(self.config.voters - {self.id}):
            self._send(
                VoteRequest(
                    self.id,
                    node,
                    vote_term,
                    last_index=self.log.last_index(),
                    last_term=self.log.last_term(),
                    pre=pre,
                    transfer=transfer,
                )
            )

    def _tally_votes(self) -> bool:
        outcome = quorum.vote_outcome(self.config.voters, self._votes)
        if outcome == quorum.WON:
            if self.role == PRE_CANDIDATE:
                self._campaign(pre_vote_won=True)
            else:
                self._become_leader()
            return True
        if outcome == quorum.LOST:
            self._become_follower(self.term, NO_NODE)
            return True
        return False

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if not self._promotable():
            return
        # A sole voter need not wait for others to miss a leader: none can exist.
        if self._election_elapsed >= self._randomized_timeout or self.config.voters == {self.id}:
            self._campaign()

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.options.election_ticks:
            self._election_elapsed = 0
            if self.options.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NO_NODE)
                return
            self._transfer_target = NO_NODE
        if self._heartbeat_elapsed >= self.options.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()
        self._maybe_auto_promote()

    def _quorum_active(self) -> bool:
        active = {self.id}
        for node, pr in self._progress.items():
            if pr.recent_active:
                active.add(node)
            if node != self.id:
                pr.recent_active = False
        return quorum.has_quorum(self.config.voters, active)

    def _maybe_auto_promote(self) -> None:
        lag = self.options.auto_promote_lag
        if lag is None or not self.config.learners:
            return
        if self.log.committed < self._term_start_index:
            return
        if self.log.last_config_index() > self.log.committed or self._transfer_target != NO_NODE:
            return
        for node in sorted(self.config.learners):
            pr = self._progress.get(node)
            if pr is not None and pr.match + lag >= self.log.last_index():
                self.propose_config(ConfigChange.promote(node))
                return

    # -- term rules -----------------------------------------------------

    def _accept_higher_term(self, message: Message) -> bool:
        if isinstance(message, VoteRequest):
            in_lease = (
                self.options.check_quorum
                and self.leader != NO_NODE
                and self._election_elapsed < self.options.election_ticks
            )
            if in_lease and not message.transfer:
                return False
            if message.pre:
                return True
        if isinstance(message, VoteResponse) and message.pre and message.granted:
            return True
        if isinstance(message, LEADER_MESSAGES):
            self._become_follower(message.term, message.src)
        else:
            self._become_follower(message.term, NO_NODE)
        return True

    def _answer_stale(self, message: Message) -> None:
        if isinstance(message, (Append, Heartbeat)) and (self.options.check_quorum or self.options.pre_vote):
            self._send(AppendResponse(self.id, message.src, self.term, reject=True))
        elif isinstance(message, VoteRequest) and message.pre:
            self._send(VoteResponse(self.id, message.src, self.term, pre=True, granted=False))

    def _step_vote_request(self, m: VoteRequest) -> None:
        can_vote = (
            self.vote == m.src or (self.vote is None and self.leader == NO_NODE) or (m.pre and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self._send(VoteResponse(self.id, m.src, m.term, pre=m.pre, granted=True))
            if not m.pre:
                self._reset_election_timer()
                self.vote = m.src
        else:
            self._send(VoteResponse(self.id, m.src, self.term, pre=m.pre, granted=False))

    # -- candidate ------------------------------------------------------

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, VoteResponse):
            if m.pre == (self.role == PRE_CANDIDATE) and m.src not in self._votes:
                self._votes[m.src] = m.granted
                self._tally_votes()
        elif isinstance(m, LEADER_MESSAGES):
            self._become_follower(m.term, m.src)
            self._step_follower(m)

    # -- follower -------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        if not isinstance(m, LEADER_MESSAGES):
            return
        if isinstance(m, (Append, Heartbeat)) and m.acked > self._acked:
            self._acked = m.acked
        self.leader = m.src
        self._leader_heard_tick = self._ticks
        self._election_elapsed = 0
        if isinstance(m, Append):
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.log.commit_to(min(m.commit, self.log.last_index()))
            request = 0
            lease = self._follower_lease
            if lease is not None:
                if m.lease_grant:
                    lease.granted(m.lease_grant, m.lease_index, m.lease_us)
                request = lease.ask(self._clock())
            self._send(
                HeartbeatResponse(
                    self.id,
                    m.src,
                    self.term,
                    context=m.context,
                    lease_request=request,
                )
            )
        else:
            self._handle_snapshot_chunk(m)

    def _handle_append(self, m: Append) -> None:
        committed = self.log.committed
        if m.prev_index < committed:
            self._send(AppendResponse(self.id, m.src, self.term, index=committed))
            return
        last_new = self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if last_new is not None:
            self._leader_matched = max(self._leader_matched, last_new)
            self.config = self.log.config()
            if m.notice:
                return
            self._send(AppendResponse(self.id, m.src, self.term, index=last_new))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(min(m.prev_index, self.log.last_index()), m.prev_term)
        self._send(
            AppendResponse(
                self.id,
                m.src,
                self.term,
                index=m.prev_index,
                reject=True,
                hint_index=hint_index,
                hint_term=hint_term,
            )
        )

    def _handle_snapshot_chunk(self, m: InstallSnapshot) -> None:
        meta = m.meta
        if meta.index <= self.log.committed:
            self._partial_snapshot = None
            self._send_caught_up(m.src)
            return
        partial = self._partial_snapshot
        if m.offset == 0:
            partial = self._partial_snapshot = _PartialSnapshot(m.src, m.term, meta, [], 0)
        if partial is None or not partial.continues(m) or partial.size != m.offset:
            expected = partial.size if partial is not None and partial.continues(m) else 0
            self._send(SnapshotResponse(self.id, m.src, self.term, meta.index, expected))
            return
        partial.chunks.append(m.data)
        partial.size += len(m.data)
        if not m.done:
            self._send(SnapshotResponse(self.id, m.src, self.term, meta.index, partial.size))
            return
        self._partial_snapshot = None
        if self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)
        else:
            self.log.restore(Snapshot(meta, b"".join(partial.chunks)))
            self.config = self.log.config()
        self._send_caught_up(m.src)

    def _send_caught_up(self, leader: int) -> None:
        committed = self.log.committed
        self._send(AppendResponse(self.id, leader, self.term, index=committed))

    # -- leader ---------------------------------------------------------

    def _check_proposal(self, size: int) -> None:
        if self.role != LEADER:
            raise NotLeader(self.leader)
        if self._transfer_target != NO_NODE:
            raise ProposalDropped("leadership transfer in progress")
        if size > self.options.max_entry_bytes:
            raise ProposalDropped(f"entry of {size} bytes exceeds {self.options.max_entry_bytes}")
        if self._uncommitted_bytes and (self._uncommitted_bytes + size > self.options.max_uncommitted_bytes):
            raise ProposalDropped("too much uncommitted data")

    def _append_as_leader(self, items: list[tuple[int, bytes]]) -> int:
        index = self.log.last_index()
        entries = []
        for kind, data in items:
            index += 1
            entries.append(Entry(index, self.term, kind, data))
            self._uncommitted_bytes += len(data)
        self.log.append(entries)
        if any(e.kind == ENTRY_CONFIG for e in entries):
            self._apply_membership(self.log.config())
        self._send_pending = True
        self._maybe_commit()
        return index

    def _apply_membership(self, config: ClusterConfig) -> None:
        self.config = config
        last = self.log.last_index()
        for node in sorted(config.members - self._progress.keys()):
            self._progress[node] = Progress(last + 1, self._ticks)
        for node in sorted(self._progress.keys() - config.members):
            del self._progress[node]
        if self._transfer_target not in config.voters:
            self._transfer_target = NO_NODE

    def _match_of(self, node: int) -> int:
        pr = self._progress.get(node)
        return pr.match if pr is not None else 0

    def _maybe_commit(self) -> None:
        index = quorum.committed_index(self.config.voters, self._match_of)
        if index <= self.log.committed or self.log.term(index) != self.term:
            return
        for entry in self.log.entries_between(self.log.committed + 1, index):
            self._uncommitted_bytes -= len(entry.data)
        self._uncommitted_bytes = max(self._uncommitted_bytes, 0)
        self.log.commit_to(index)
        # Under leases followers apply only what every holder has on disk:
        # exposable() tells them when that moves, and a commit index alone
        # would be of no use to them.
        if not self.options.read_lease:
            self._commit_to_broadcast = True
        self._release_reads_waiting_for_commit()
        if self.id not in self.config.voters and self.log.committed >= self.log.last_config_index():
            self._step_down_removed()

    def _step_down_removed(self) -> None:
        successors = [
            (pr.match, node)
            for node, pr in self._progress.items()
            if node in self.config.voters and pr.match == self.log.last_index()
        ]
        if successors:
            self._send(TimeoutNow(self.id, max(successors)[1], self.term))
        self._flush_appends()
        self._become_follower(self.term, NO_NODE)

    def _step_leader(self, m: Message) -> None:
        pr = self._progress.get(m.src)
        if pr is None:
            return
        if isinstance(m, (AppendResponse, HeartbeatResponse, SnapshotResponse)):
            pr.recent_active = True
            pr.last_heard = self._ticks
        if isinstance(m, AppendResponse):
            self._handle_append_response(m, pr)
        elif isinstance(m, HeartbeatResponse):
            self._handle_heartbeat_response(m, pr)
        elif isinstance(m, SnapshotResponse):
            pr.last_ack = self._ticks
            if pr.state == SNAPSHOT and m.index == pr.snapshot_index:
                pr.snapshot_offset = m.next_offset
                self._send_snapshot_chunk(m.src, pr)

    def _handle_append_response(self, m: AppendResponse, pr: Progress) -> None:
        pr.last_ack = self._ticks
        if m.reject:
            hint = m.hint_index
            if m.hint_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decrease(m.index, hint):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._send_pending = True
            return
        updated = pr.maybe_update(m.index)
        if not updated and not (pr.state == PROBE and pr.match == m.index):
            return
        if pr.state == PROBE or (
            pr.state == SNAPSHOT and (pr.match >= pr.snapshot_index or pr.match + 1 >= self.log.first_index())
        ):
            pr.become_replicate()
        self._maybe_commit()
        if self.role != LEADER:
            return
        if m.src == self._transfer_target and pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, m.src, self.term))
        if pr.next <= self.log.last_index():
            self._send_pending = True

    def _handle_heartbeat_response(self, m: HeartbeatResponse, pr: Progress) -> None:
        silent = self._ticks - pr.last_ack >= self.options.retransmit_ticks
        if pr.state == REPLICATE and pr.inflight and silent:
            pr.become_probe()
        elif pr.state == SNAPSHOT and silent:
            pr.last_ack = self._ticks
            self._send_snapshot_chunk(m.src, pr)
        if pr.state == PROBE:
            pr.probe_sent = False
        if pr.match < self.log.last_index() or pr.state == PROBE:
            self._send_pending = True
        leases = self._leader_leases
        if leases is not None:
            leases.round_answered(m.src, m.context, self.config.voters)
            if m.lease_request:
                leases.requested(m.src, m.lease_request)
        for read in self._reads.confirm(m.src, m.context, self.config.voters):
            self._deliver_read(read.request_id, read.index, read.origin)

    def _broadcast_heartbeat(self) -> None:
        leases = self._leader_leases
        # A lease covers what the leader committed; before it committed an
        # entry of its own term that may not include every acknowledged write.
        grants = leases is not None and self.log.term(self.log.committed) == self.term
        if leases is None:
            context = self._reads.last_seq
        else:
            now = self._clock()
            context = self._reads.new_round()
            leases.round_sent(context, now, self.config.voters)
        for node, pr in sorted(self._progress.items()):
            if node != self.id:
                commit = min(pr.match, self.log.committed)
                grant, micros = leases.grant(node, now) if grants and leases is not None else (0, 0)
                self._send(
                    Heartbeat(
                        self.id,
                        node,
                        self.term,
                        commit=commit,
                        context=context,
                        lease_grant=grant,
                        lease_index=self.log.committed if grant else 0,
                        lease_us=micros,
                        acked=self._acked,
                    )
                )

    def _flush_appends(self) -> None:
        if self.role != LEADER or not (self._send_pending or self._commit_to_broadcast):
            return
        with_commit = self._commit_to_broadcast
        self._send_pending = self._commit_to_broadcast = False
        last = self.log.last_index()
        for node, pr in sorted(self._progress.items()):
            if node == self.id:
                continue
            allow_empty = with_commit
            while self._send_append(node, pr, allow_empty):
                allow_empty = False
                if pr.state != REPLICATE or pr.next > last:
                    break

    def _send_append(self, node: int, pr: Progress, allow_empty: bool) -> bool:
        if pr.is_paused(self.options.max_inflight):
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        if prev_term is None:
            self._send_snapshot_chunk(node, pr)
            return False
        budget = SizeBudget(self.options.max_append_bytes, codec.ENTRY_OVERHEAD)
        entries = self.log.entries_from(pr.next, self.options.max_append_entries, budget)
        if not entries and not allow_empty and pr.state == REPLICATE:
            return False
        self._send(
            Append(
                self.id,
                node,
                self.term,
                prev_index=prev_index,
                prev_term=prev_term,
                commit=self.log.committed,
                entries=tuple(entries),
                acked=self._acked,
                notice=not entries and pr.state == REPLICATE,
            )
        )
        pr.sent(entries[-1].index if entries else 0, self._ticks)
        return True

    def _send_snapshot_chunk(self, node: int, pr: Progress) -> None:
        snapshot = self.log.snapshot
        if snapshot is None:
            raise InvariantViolation("a follower needs compacted entries but there is no snapshot")
        if pr.state != SNAPSHOT or pr.snapshot_index != snapshot.meta.index:
            pr.become_snapshot(snapshot.meta.index)
            pr.last_ack = self._ticks
        offset = min(pr.snapshot_offset, len(snapshot.data))
        chunk = snapshot.data[offset : offset + self.options.snapshot_chunk_bytes]
        done = offset + len(chunk) >= len(snapshot.data)
        self._send(InstallSnapshot(self.id, node, self.term, meta=snapshot.meta, offset=offset, data=chunk, done=done))

    # -- ReadIndex ------------------------------------------------------

    def _step_read_request(self, m: ReadIndexRequest) -> None:
        if self.role == LEADER:
            self._start_read(m.request_id, m.src)

    def _start_read(self, request_id: bytes, origin: int) -> None:
        if self.log.term(self.log.committed) != self.term:
            self._reads_before_commit.append((request_id, origin))
            return
        if self.config.voters == {self.id}:
            self._deliver_read(request_id, self.log.committed, origin)
            return
        context = self._reads.add(request_id, self.log.committed, origin, self.id)
        if self._leader_leases is not None:
            self._leader_leases.round_sent(context, self._clock(), self.config.voters)
        for node in sorted(self._progress):
            if node != self.id:
                commit = min(self._progress[node].match, self.log.committed)
                self._send(Heartbeat(self.id, node, self.term, commit=commit, context=context, acked=self._acked))

    def _release_reads_waiting_for_commit(self) -> None:
        if self._reads_before_commit and self.log.term(self.log.committed) == self.term:
            waiting, self._reads_before_commit = self._reads_before_commit, []
            for request_id, origin in waiting:
                self._start_read(request_id, origin)

    def _deliver_read(self, request_id: bytes, index: int, origin: int) -> None:
        if origin == self.id:
            self._read_states.append(ReadState(request_id, index))
        else:
            self._send(ReadIndexResponse(self.id, origin, self.term, request_id, index))
