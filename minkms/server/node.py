"""
The node driver: the Twisted shell around the pure Raft core and the pure
state machine (DESIGN decisions 5, 6, 7, 9).

It owns the ticker, the volume and the peer links, and hands the core to
the one Raft driver (L{minkms.driver.RaftDriver}) over the server's ports
(L{minkms.server.ports}); the simulator runs the same driver.  Proposals
that arrive while a Ready is being persisted wait in the core and go out
with the next one, so the volume's group commit and Raft's batching add
up.

A client write is answered once its entry is applied on the node that
received it (a follower forwards the write to the leader and waits for its
own apply); the core lets a node apply an entry only once it is committed
and every read-lease holder has it on disk, and a read is answered only under the read
rule of L{minkms.driver.reads}: so every node's reads include every
acknowledged write.
"""

import os
import random
import time
import uuid

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from minkms.driver import RaftDriver
from minkms.errors import KMSError, StartupError, bad_request, unavailable
from minkms.raft import codec
from minkms.raft.config import ConfigChange, encode_config, single_node_config
from minkms.raft.core import RaftCore, RaftOptions, bootstrap_state
from minkms.raft.errors import ConfigChangeRejected
from minkms.raft.ready import LEADER
from minkms.raft.types import DurableState, HardState, Snapshot, SnapshotMeta
from minkms.server import peer, status
from minkms.server.interfaces import INode
from minkms.server.ports import KMSMachine, PeerLinks, VolumeStorage
from minkms.server.prompttls import TurnSends
from minkms.server.slices import SlicedWork
from minkms.server.stalls import StallWatch
from minkms.server.writes import WritePath
from minkms.state.machine import StateMachine
from minkms.storage.errors import StorageFailed
from minkms.storage.inline import InlineAppends
from minkms.storage.volume import open_volume_now

log = Logger()

TICKS_PER_HEARTBEAT = 1
READ_TIMEOUT = 5.0
"""Seconds a read may wait to prove the local state fresh before a 503."""
READS_LEASED = "lease"
READS_CONFIRMED = "read-index"
READS_UNLEASED = "without-leader"
READS_REFUSED = "refused"


@implementer(INode)
class Node:
    """
    One cluster member: local reads from L{state}, writes through Raft;
    to the API an L{INode}.
    """

    def __init__(self, reactor, settings, volume, hsm, rng=None, clock=time.monotonic) -> None:
        self.reactor = reactor
        self.clock = clock
        self.settings = settings
        self.volume = volume
        self.hsm = hsm
        self.host = settings.host
        self.exit_status = 0
        self.fatal_hook = None
        self._rng = rng or random.Random(int.from_bytes(os.urandom(8), "big"))
        self._started = clock()
        self._tick_seconds = settings.heartbeat / TICKS_PER_HEARTBEAT
        self._election_ticks = max(2, round(settings.election_timeout / self._tick_seconds))
        self.sends = TurnSends(reactor)
        self._links = PeerLinks(self.peer_link, self.sends)
        self._peer_tls = peer.peer_tls(hsm)
        self._ticker = None
        self._failed = None
        self._joining = False
        self._stopped = False
        self._watches: list[tuple] = []
        self._sliced = SlicedWork(reactor)
        self.stalls = StallWatch(self._tick_seconds, clock, lambda text: log.warn("{text}", text=text))
        self._restore(_as_durable(volume.recovered))
        from minkms.apikey import APIKey

        self._peer_identity = APIKey.parse(hsm.peer_api_key()).identity
        self.peer_protocol = peer.PeerListener(self, self._peer_identity)
        from minkms.server.membership import Standing

        self.standing = Standing(self)
        self.writes = WritePath(self)

    def dump_state(self) -> defer.Deferred:
        """
        Fires with the snapshot bytes of the state as it is now, serialized
        a slice per reactor turn (L{SlicedWork}), so that a large state
        holds up no heartbeat.
        """
        return self._sliced.join(self.state.frozen().snapshot_pieces())

    # -- start-up ---------------------------------------------------------

    def _restore(self, durable: DurableState) -> None:
        """Rebuild the state machine, the core and the driver from durable state."""
        self._leader_shown = (-1, 0)
        self.state = StateMachine()
        snapshot = durable.snapshot
        applied = 0
        if snapshot is not None:
            self.state.restore(snapshot.data)
            applied = snapshot.meta.index
        options = RaftOptions(
            election_ticks=self._election_ticks,
            heartbeat_ticks=TICKS_PER_HEARTBEAT,
            read_lease=getattr(self.settings, "read_lease", 1.0),
        )
        self.core = RaftCore(self.volume.node_id, durable, self._rng, options, clock=self.clock)
        self._storage = VolumeStorage(self.volume)
        self.driver = RaftDriver(
            self.core,
            self._storage,
            self._links,
            KMSMachine(self.state, self.dump_state),
            self.clock,
            applied,
            reads_without_leader=getattr(self.settings, "reads_without_leader", "serve"),
            compact_every=self.settings.snapshot_entries,
            on_ready=self._after_ready,
            on_failure=self._crash,
            warn=lambda text: log.warn("{text}", text=text),
            soon=lambda f: self.reactor.callLater(0, f),
        )

    async def reset_to_join(self, cluster_id: str, node_id: int) -> None:
        """
        Become node C{node_id} of C{cluster_id} with an empty log, waiting
        for the leader to send the log or a snapshot (C{minkms add}).
        """
        await self._reset(cluster_id, node_id, found=False)

    async def reset_to_fresh(self) -> None:
        """
        Wipe the cluster's state and start over as node 0 of a new
        single-node cluster (C{minkms rm --delete}).
        """
        await self._reset(str(uuid.uuid4()), 0, found=True)

    async def edit_membership(self, remove_ids) -> None:
        """
        CLUSTER:EDIT (C{minkms edit HOST --rm ID}): drop members from this
        node's own membership without consensus, for when a quorum is lost
        for good.  Everything committed is applied first, then the log is
        rewritten as one snapshot carrying the edited membership; entries
        not yet committed (never acknowledged) are dropped.
        """
        config = self.config
        unknown = sorted(set(remove_ids) - config.members)
        if unknown:
            raise KMSError(404, f"node ID(s) {', '.join(map(str, unknown))} are not part of the cluster")
        if self.node_id in remove_ids:
            raise bad_request("a node cannot remove itself: send the edit to a node that stays")
        edited = config
        try:
            for node_id in sorted(set(remove_ids)):
                edited = ConfigChange.remove(node_id).apply(edited)
        except ConfigChangeRejected as e:
            raise bad_request(f"cannot edit the membership: {e}") from None
        await self._pause_loop()
        try:
            self.driver.paused = False
            await self.driver.when_idle()
            self.driver.paused = True
            index = self.driver.applied
            term = self.core.log.term(index)
            snapshot = Snapshot(SnapshotMeta(index, term, encode_config(edited)), self.state.snapshot())
            hard = HardState(term=self.core.term, vote=self.core.vote, commit=index)
            await self.volume.replace([snapshot, hard])
            self.driver.stop("the membership was edited")
            self._restore(DurableState(hard, snapshot, ()))
            self._update_links()
            log.warn("membership edited without consensus: removed node(s) {ids}", ids=sorted(set(remove_ids)))
        finally:
            self._resume_loop()

    async def _pause_loop(self) -> None:
        """Stop ticking and wait until no Ready is in flight."""
        self._joining = True
        self.driver.paused = True
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        await self.driver.when_idle()

    def _resume_loop(self) -> None:
        self._joining = False
        self.driver.paused = False
        if self._ticker is not None and not self._ticker.running:
            self.stalls.restart()
            self._ticker.start(self._tick_seconds, now=False)

    async def _reset(self, cluster_id: str, node_id: int, found: bool) -> None:
        await self._pause_loop()
        try:
            self._links.close_all()
            self.driver.stop("the node left its cluster to join another")
            await self.volume.reset(cluster_id, node_id)
            if found:
                durable = bootstrap_state(single_node_config(node_id, self.host, cluster_id))
                await self.volume.append(list(durable.entries) + [durable.hard_state])
            else:
                durable = DurableState()
            self._restore(durable)
            self._update_links()
        finally:
            self._resume_loop()

    @property
    def node_id(self) -> int:
        return self.volume.node_id

    @property
    def cluster_id(self) -> str:
        return self.volume.cluster_id

    @property
    def config(self):
        """The membership as this node's log has it now."""
        return self.core.config

    def members(self) -> dict:
        """Node ID -> C{host:port} of the current membership."""
        return dict(self.config.addresses)

    def check_membership(self) -> None:
        """
        Refuse to start when this node's C{--host} is not the address its
        cluster knows it by (the guide's "server not part of cluster").
        """
        config = self.config
        known = config.address_of(self.node_id)
        if known is None and config.members:
            raise StartupError("server not part of cluster")
        if known is not None and known != self.host:
            raise StartupError(
                f"server not part of cluster: the cluster knows node {self.node_id} as {known}, "
                f"but this node was started with --host {self.host}"
            )

    def start(self) -> None:
        """Start ticking and connecting to the other members."""
        self._update_links()
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self._tick_seconds, now=False)
        self.driver.kick()

    async def stop(self) -> None:
        """Stop timers and links, let the volume finish, close it."""
        self._stopped = True
        self._links.stopped = True
        self.standing.close()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._links.close_all()
        self.peer_protocol.close_all()
        self.driver.stop("node is shutting down")
        self._storage.write_held()
        self._sliced.stop()
        self.sends.stop()
        await self.volume.close()

    def close(self) -> None:
        """Release the volume when start-up fails before the reactor runs."""
        self.volume.close()

    def extra_resources(self) -> dict:
        """API resources beyond the KMS commands (backup and restore)."""
        from minkms.server.dbresource import DBResource

        return {b"db": DBResource(self, self.settings.sysadmin)}

    # -- the driver's hooks ------------------------------------------------

    def _tick(self) -> None:
        self.stalls.tick()
        self.driver.tick()
        self._storage.write_held()
        self._check_watches()

    def when(self, condition) -> defer.Deferred:
        """
        Fires with C{condition()} once it is true, checked now and after
        every Raft message and tick this node takes in (a change in the
        core's view, such as a follower's progress, comes with one); fails
        with what C{condition} raises.  Cancel it, or give it a timeout, to
        stop waiting.
        """
        watch: tuple = ()
        d = defer.Deferred(lambda _: self._watches.remove(watch) if watch in self._watches else None)
        watch = (condition, d)
        self._watches.append(watch)
        self._check_watches()
        return d

    def _check_watches(self) -> None:
        for watch in list(self._watches):
            condition, d = watch
            try:
                result = condition()
            except Exception:
                self._watches.remove(watch)
                d.errback()
                continue
            if result:
                self._watches.remove(watch)
                d.callback(result)

    def _after_ready(self, ready) -> None:
        if self.core.config is not self._links.config:
            self._update_links()
        soft = ready.soft_state
        if self.volume.inline is not None:
            self.volume.inline.leading = soft.role == LEADER
        if soft.leader != self._leader_shown[0] or (soft.leader >= 0 and soft.term != self._leader_shown[1]):
            self._show_leader(soft.leader, soft.term)

    def _show_leader(self, leader: int, term: int) -> None:
        """Log a change of leader, as an operator reading the log after an incident needs it."""
        previous, self._leader_shown = self._leader_shown[0], (leader, term)
        if leader == self.core.id:
            log.info("this node is the leader (term {term})", term=term)
        elif leader >= 0:
            address = self.core.config.addresses.get(leader)
            where = f"node {leader} at {address}" if address else f"node {leader}"
            log.info("{where} is the leader (term {term})", where=where, term=term)
        elif previous >= 0:
            log.warn(
                "lost the leader (node {previous}); waiting for an election (term {term})", previous=previous, term=term
            )

    def _crash(self, failure) -> str:
        """
        Storage failed (or an invariant broke): stop acknowledging writes,
        say why, and stop the process, since a node that cannot persist
        must not vote or serve as if it could.
        """
        if failure.check(StorageFailed):
            reason = str(failure.value)
        else:
            log.failure("node driver failed", failure)
            reason = f"node failed: {failure.getErrorMessage()}"
        self.fail(reason)
        return reason

    def fail(self, reason: str) -> None:
        """Stop acknowledging writes and stop the process, for C{reason}."""
        if self._stopped:
            return
        self._failed = reason
        log.critical("{reason}; stopping", reason=reason)
        self.driver.stop(reason)
        self.exit_status = 1
        if self.fatal_hook is not None:
            self.fatal_hook(reason)

    # -- membership and links ---------------------------------------------

    def _update_links(self) -> None:
        if not self._stopped:
            self._links.update(self.config, self.node_id)

    def peer_link(self, address: str, member: bool = True) -> peer.PeerLink:
        """
        A link to the node at C{address}, authenticated both ways by the
        peer certificate (C{member=False}: only to look at a node).
        """
        return peer.PeerLink(self.reactor, address, self, self._peer_tls, self._peer_identity, member, self.sends)

    # -- writes (L{minkms.server.writes}) ---------------------------------

    def check_usable(self) -> None:
        """503 unless this node can take part in reads and writes now."""
        if self._failed is not None:
            raise unavailable(self._failed)
        if self._joining:
            raise unavailable("node is joining a cluster")
        self.standing.check_serving()

    def submit_write(self, ctx, command, request):
        """
        A client's write: checked and prepared on the leader, whose state is
        the newest, then replicated; fires with the apply result here.
        """
        return self.writes.submit(ctx, command, request)

    def propose(self, data: bytes):
        """Replicate a prepared command; fire with its apply result on this node."""
        return self.writes.propose(data)

    def submit_forwarded(self, code: int, enclave: str, caller: str, request: bytes):
        """A write forwarded by a follower (L{peer.Forward}): propose it here."""
        return self.writes.submit_forwarded(code, enclave, caller, request)

    def call_leader(self, command, timeout: float, **arguments):
        """Call a peer command on the leader (L{WritePath.call_leader})."""
        return defer.ensureDeferred(self.writes.call_leader(command, timeout, **arguments))

    def propose_membership(self, change):
        """Propose a membership change here (the leader); fires once applied."""
        return defer.ensureDeferred(self.writes.propose_membership(change))

    # -- reads and status -------------------------------------------------

    def read_barrier(self):
        """
        None if a read may be answered from this node's state now (the hot
        path), else a Deferred that fires once it may, or fails with 503
        (L{minkms.driver.reads}).
        """
        self.check_usable()
        d = self.driver.read_barrier()
        if d is not None:
            d.addTimeout(READ_TIMEOUT, self.reactor, onTimeoutCancel=_read_timed_out)
        return d

    def fresh_now(self) -> bool:
        """Whether this node's state includes every acknowledged write right now."""
        return self._failed is None and not self._joining and self.driver.fresh_now()

    def receive_raft(self, data: bytes, via=None) -> None:
        """A Raft message from a peer, which came over connection C{via}."""
        try:
            message = codec.decode(data)
        except codec.CodecError as e:
            log.warn("dropped an undecodable raft message: {e}", e=e)
            return
        if via is not None:
            if not self.standing.accept(message, via):
                return
            self._links.heard_from(message.src, via)
        if self._failed is None and not self._joining and not self._stopped:
            self.driver.step(message)
            self._check_watches()

    def ready(self, write: bool) -> bool:
        """
        Readiness for reads (served under some rule of L{read_mode}) or
        writes (a leader is known).
        """
        if self._failed is not None or self._joining or self.standing.refusal is not None:
            return False
        if not write:
            return self.read_mode() != READS_REFUSED
        return self.core.leader >= 0

    def read_mode(self) -> str:
        """
        How this node answers reads now: under a read lease, after a
        ReadIndex round with the leader, from its own state without a
        leader (C{reads_without_leader: serve}), or not at all.
        """
        if self.core.lease_read_index() is not None:
            return READS_LEASED
        if self.core.leader >= 0:
            return READS_CONFIRMED
        if self.driver.reads_without_leader == "serve":
            return READS_UNLEASED
        return READS_REFUSED

    def local_status(self):
        """This node's C{ServerStatusResponse}."""
        return status.local_status(self)

    def cluster_status(self):
        """A Deferred ClusterStatusResponse gathered from every member."""
        return defer.ensureDeferred(status.cluster_status(self))

    def uptime(self) -> float:
        """Seconds since this node started."""
        return self.clock() - self._started

    def leader_contact_age(self) -> float | None:
        """Seconds since this node last heard from its leader (0 on the leader), or None."""
        age = self.core.status().leader_contact_age
        return None if age is None else age * self._tick_seconds

    def peer_links(self) -> dict:
        """Node ID -> the kept-up link to that member."""
        return self._links.links

    # -- cluster membership -----------------------------------------------

    def cluster_command(self, command, request):
        """A cluster row of the command table, from the API (SysAdmin checked); fires with its answer."""
        from minkms.server.membership import run_cluster_command

        return defer.ensureDeferred(run_cluster_command(self, command.code, request))

    def cluster_command_forwarded(self, code: int, request: bytes):
        """A membership command forwarded by a follower to this leader."""
        from minkms.server.membership import run_cluster_command
        from minkms.wire.commands import BY_CODE

        message = BY_CODE[code].request.FromString(request)
        return defer.ensureDeferred(run_cluster_command(self, code, message))

    def leave_cluster(self):
        """The leader removed this node and asked it to start over."""
        log.info(
            "removed from cluster {cluster}: starting over as a fresh single-node cluster", cluster=self.cluster_id
        )
        return defer.ensureDeferred(self.reset_to_fresh())

    def join_cluster(self, cluster_id: str, node_id: int, host: str):
        """The leader adds this fresh node to its cluster."""
        from minkms.server.membership import join

        return defer.ensureDeferred(join(self, cluster_id, node_id, host))


def _read_timed_out(result, timeout):
    """C{addTimeout}'s replacement result for a read that could not be proven fresh."""
    return Failure(
        unavailable(
            f"cannot serve the read: this node could not confirm within {timeout:g}s "
            "that its state is fresh (no lease, leader unreachable)"
        )
    )


def _as_durable(recovered) -> DurableState:
    return DurableState(recovered.hard_state, recovered.snapshot, tuple(recovered.entries))


def open_node(settings, reactor, storage_runner=None) -> Node:
    """
    Open the volume and build the node; a fresh volume becomes a
    single-node cluster with this node as node 0 (DESIGN decision 9).
    C{storage_runner} runs the volume's blocking calls (see
    L{minkms.storage.volume.open_volume_now}).
    """
    from minkms.server.membership import founding_records

    volume = open_volume_now(
        settings.volume,
        settings.hsm,
        reactor=reactor,
        runner=storage_runner,
        founding=founding_records(settings.host),
        inline=InlineAppends(),
    )
    try:
        node = Node(reactor, settings, volume, settings.hsm)
        node.check_membership()
    except BaseException:
        volume.close()
        raise
    return node
