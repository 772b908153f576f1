"""
The node driver: the Twisted shell around the pure Raft core and the pure
state machine (DESIGN decisions 5, 6, 7, 9).

It owns the timers, the volume and the peer links, and runs the core's
loop: take a L{Ready}, persist it (fsync) through the volume, then send its
messages, then apply its committed entries, then advance.  Proposals that
arrive while a Ready is being persisted wait in the core and go out with
the next one, so the volume's group commit and Raft's batching add up.

A client write is answered once its entry is committed on a quorum and
applied on the node that received it (a follower forwards the write to the
leader and waits for its own apply), so a client reads its own writes.
"""

import collections
import os
import platform
import random
import time
import uuid

from twisted.internet import defer, task
from twisted.logger import Logger

from minkms import version
from minkms.errors import KMSError, StartupError, bad_request, unavailable
from minkms.raft import codec
from minkms.raft.config import ConfigChange, encode_config, single_node_config
from minkms.raft.core import RaftCore, RaftOptions, bootstrap_state
from minkms.raft.errors import ConfigChangeRejected, NotLeader, RaftError
from minkms.raft.ready import LEADER
from minkms.raft.types import ENTRY_NORMAL, DurableState, HardState, Snapshot, SnapshotMeta
from minkms.server import dispatch, peer
from minkms.state.machine import StateMachine
from minkms.storage.errors import StorageFailed
from minkms.storage.volume import open_volume_now
from minkms.wire import kms_pb2 as pb

log = Logger()

TICKS_PER_HEARTBEAT = 1
WRITE_TIMEOUT = 15.0
"""Seconds a client write may wait for commit before an ambiguous 503."""
RECENT_RESULTS = 4096


class Node:
    """
    One cluster member: local reads from L{state}, writes through Raft.

    Implements L{minkms.server.interfaces.INode}.
    """

    def __init__(self, reactor, settings, volume, hsm, rng=None) -> None:
        self.reactor = reactor
        self.settings = settings
        self.volume = volume
        self.hsm = hsm
        self.host = settings.host
        self.exit_status = 0
        self.fatal_hook = None
        self._rng = rng or random.Random(int.from_bytes(os.urandom(8), "big"))
        self._started = time.monotonic()
        self._tick_seconds = settings.heartbeat / TICKS_PER_HEARTBEAT
        self._election_ticks = max(2, round(settings.election_timeout / self._tick_seconds))
        self._waiters: dict[int, list] = {}
        self._recent = collections.OrderedDict()
        self._links: dict[int, peer.PeerLink] = {}
        self._inbound: dict = {}
        self._linked_config = None
        self._peer_tls = peer.peer_tls(hsm)
        self._busy = False
        self._again = False
        self._ticker = None
        self._failed = None
        self._joining = False
        self._stopped = False
        self._bootstrap_records = None
        self._restore(_as_durable(volume.recovered))
        from minkms.apikey import APIKey

        self._peer_identity = APIKey.parse(hsm.peer_api_key()).identity
        self.peer_protocol = peer.PeerListener(self, self._peer_identity)
        from minkms.server.membership import Standing

        self.standing = Standing(self)

    # -- start-up ---------------------------------------------------------

    def _restore(self, durable: DurableState) -> None:
        """Rebuild the state machine and the core from durable state."""
        self.state = StateMachine()
        snapshot = durable.snapshot
        if snapshot is not None:
            self.state.restore(snapshot.data)
            self._applied = snapshot.meta.index
        else:
            self._applied = 0
        self._snapshot_index = self._applied
        options = RaftOptions(election_ticks=self._election_ticks, heartbeat_ticks=TICKS_PER_HEARTBEAT)
        self.core = RaftCore(self.volume.node_id, durable, self._rng, options)

    def bootstrap(self) -> None:
        """
        Found a single-node cluster on a fresh volume: node 0 at C{--host}.
        The founding entry is written before the node ticks (L{start}).
        """
        config = single_node_config(self.node_id, self.host, self.cluster_id)
        durable = bootstrap_state(config)
        self._bootstrap_records = list(durable.entries) + [durable.hard_state]
        self._restore(durable)

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
            while self.core.has_ready():
                self._busy = True
                await self._process()
            index = self._applied
            term = self.core.log.term(index)
            snapshot = Snapshot(SnapshotMeta(index, term, encode_config(edited)), self.state.snapshot())
            hard = HardState(term=self.core.term, vote=self.core.vote, commit=index)
            await self.volume.replace([snapshot, hard])
            self._recent.clear()
            self._restore(DurableState(hard, snapshot, ()))
            self._update_links()
            log.warn("membership edited without consensus: removed node(s) {ids}", ids=sorted(set(remove_ids)))
        finally:
            self._resume_loop()

    async def _pause_loop(self) -> None:
        """Stop ticking and wait until no Ready is in flight."""
        self._joining = True
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        while self._busy:
            await task.deferLater(self.reactor, 0.01, lambda: None)

    def _resume_loop(self) -> None:
        self._joining = False
        if self._ticker is not None and not self._ticker.running:
            self._ticker.start(self._tick_seconds, now=False)

    async def _reset(self, cluster_id: str, node_id: int, found: bool) -> None:
        await self._pause_loop()
        try:
            for link in self._links.values():
                link.close()
            self._links.clear()
            self._fail_waiters("the node left its cluster to join another")
            await self.volume.reset(cluster_id, node_id)
            self._recent.clear()
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
        if self._bootstrap_records:
            self._busy = True
            d = self.volume.append(self._bootstrap_records)
            self._bootstrap_records = None

            def written(_):
                self._busy = False
                self._kick()

            d.addCallbacks(written, self._crash)
        self._update_links()
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self._tick_seconds, now=False)
        self._kick()

    async def stop(self) -> None:
        """Stop timers and links, let the volume finish, close it."""
        self._stopped = True
        self.standing.close()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        for link in self._links.values():
            link.close()
        self._links.clear()
        self.peer_protocol.close_all()
        self._fail_waiters("node is shutting down")
        await self.volume.close()

    def close(self) -> None:
        """Release the volume when start-up fails before the reactor runs."""
        self.volume.close()

    def extra_resources(self) -> dict:
        """API resources beyond the KMS commands (backup and restore)."""
        from minkms.server.dbresource import DBResource

        return {b"db": DBResource(self, self.settings.sysadmin)}

    # -- the core loop ----------------------------------------------------

    def _tick(self) -> None:
        self.core.tick()
        self._kick()

    def _kick(self) -> None:
        """Process the core's pending work soon (once per turn)."""
        if self._busy:
            self._again = True
            return
        if self._failed is None and not self._joining and not self._stopped and self.core.has_ready():
            self._busy = True
            d = defer.ensureDeferred(self._process())
            d.addErrback(self._crash)

    async def _process(self) -> None:
        try:
            while self.core.has_ready():
                self._again = False
                rd = self.core.ready()
                records = []
                if rd.snapshot is not None:
                    records.append(rd.snapshot)
                records.extend(rd.entries)
                if rd.hard_state is not None:
                    records.append(rd.hard_state)
                if records:
                    await self.volume.append(records)
                for message in rd.messages:
                    self._send(message)
                if rd.snapshot is not None:
                    self._install(rd.snapshot)
                for entry in rd.committed_entries:
                    self._apply(entry)
                self.core.advance(rd)
                if self.core.config is not self._linked_config:
                    self._update_links()
                self._maybe_snapshot()
        finally:
            self._busy = False
        if self._again:
            self._kick()

    def _crash(self, failure) -> None:
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

    def fail(self, reason: str) -> None:
        """Stop acknowledging writes and stop the process, for C{reason}."""
        self._failed = reason
        log.critical("{reason}; stopping", reason=reason)
        self._fail_waiters(reason)
        self.exit_status = 1
        if self.fatal_hook is not None:
            self.fatal_hook(reason)

    def _fail_waiters(self, reason: str) -> None:
        """Answer every write still waiting for its entry with 503."""
        waiters, self._waiters = self._waiters, {}
        for pending in waiters.values():
            for _, d in pending:
                if not d.called:
                    d.errback(unavailable(reason))

    def _send(self, message) -> None:
        """
        Send over our link to the destination, or else back over the
        connection its last message came on (a joining node has no
        membership, hence no links, until the log reaches it).
        """
        data = codec.encode(message)
        link = self._links.get(message.dst)
        if link is not None and link.send(data):
            return
        inbound = self._inbound.get(message.dst)
        if inbound is not None and inbound.transport is not None and inbound.transport.connected:
            inbound.callRemote(peer.RaftMessage, data=data)

    def _install(self, snapshot) -> None:
        self.state.restore(snapshot.data)
        self._applied = self._snapshot_index = snapshot.meta.index
        log.info("installed a snapshot from the leader at index {index} ({size} bytes)",
                 index=snapshot.meta.index, size=len(snapshot.data))

    def _apply(self, entry) -> None:
        result = None
        if entry.kind == ENTRY_NORMAL:
            result = self.state.apply(entry.data)
        self._applied = entry.index
        self._recent[entry.index] = (entry.term, result)
        if len(self._recent) > RECENT_RESULTS:
            self._recent.popitem(last=False)
        for term, d in self._waiters.pop(entry.index, ()):
            _settle(d, term, entry.term, result)

    def _maybe_snapshot(self) -> None:
        """Compact the log every C{snapshot_entries} applied entries."""
        if self._applied - self._snapshot_index < self.settings.snapshot_entries:
            return
        snapshot = self.core.compact(self._applied, self.state.snapshot())
        self._snapshot_index = snapshot.meta.index
        self.volume.append([snapshot]).addErrback(self._crash)

    # -- membership and links ---------------------------------------------

    def _update_links(self) -> None:
        if self._stopped:
            return
        config = self.config
        self._linked_config = config
        wanted = {i: a for i, a in config.addresses.items() if i in config.members and i != self.node_id}
        for node_id in list(self._links):
            if wanted.get(node_id) != self._links[node_id].address:
                self._links.pop(node_id).close()
        for node_id, address in wanted.items():
            if node_id not in self._links:
                self._links[node_id] = self.peer_link(address)

    def peer_link(self, address: str, member: bool = True) -> peer.PeerLink:
        """
        A link to the node at C{address}, authenticated both ways by the
        peer certificate (C{member=False}: only to look at a node).
        """
        return peer.PeerLink(self.reactor, address, self, self._peer_tls, self._peer_identity, member)

    # -- writes -----------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise unavailable(self._failed)
        if self._joining:
            raise unavailable("node is joining a cluster")
        self.standing.check_serving()

    def submit_write(self, ctx, command, request):
        """
        A client's write: checked and prepared on the leader, whose state is
        the newest (a lagging follower could answer a wrong 404 or 409),
        then replicated; fires with the apply result on this node.
        """
        return self._replicate(
            lambda: dispatch.prepare_write(self.state, ctx, command, request).encode(),
            peer.ForwardWrite,
            code=command.code, enclave=ctx.enclave, caller=ctx.caller,
            request=request.SerializeToString(),
        )

    def propose(self, data: bytes):
        """Replicate a prepared command; fire with its apply result on this node."""
        return self._replicate(lambda: data, peer.Forward, data=data)

    def submit_forwarded(self, code: int, enclave: str, caller: str, request: bytes):
        """A client write forwarded by a follower: prepare and propose it here."""
        from minkms.wire.commands import BY_CODE

        command = BY_CODE[code]
        ctx = dispatch.CallContext(caller=caller, enclave=enclave,
                                   sysadmin=self.settings.sysadmin, now_ns=time.time_ns())
        message = command.request.FromString(request)
        return self._propose_as_leader(
            lambda: dispatch.prepare_write(self.state, ctx, command, message).encode()
        )

    def propose_forwarded(self, data: bytes):
        """A prepared command forwarded by a follower: propose it here."""
        return self._propose_as_leader(lambda: data)

    def _replicate(self, prepare, forward, **arguments):
        """
        On the leader, propose C{prepare()} and wait for its apply; on a
        follower, send the leader C{forward(**arguments)} and wait for the
        entry it placed to be applied here.
        """
        try:
            self._check_usable()
            if self.core.role == LEADER:
                index, term = self._propose_as_leader(prepare)
                return self._wait_applied(index, term)
        except KMSError as e:
            return defer.fail(e)
        if self.core.leader < 0:
            return defer.fail(unavailable("no leader: the cluster has no quorum right now"))
        return defer.ensureDeferred(self._via_leader(forward, **arguments))

    def _propose_as_leader(self, prepare) -> tuple[int, int]:
        """Propose C{prepare()} here; say where the entry went (index, term)."""
        self._check_usable()
        if self.core.role != LEADER:
            raise unavailable("not the leader any more; try again")
        data = prepare()
        try:
            index = self.core.propose(data)
        except NotLeader:
            raise unavailable("no leader: the cluster has no quorum right now") from None
        except RaftError as e:
            raise unavailable(f"write not accepted: {e}") from None
        self._kick()
        return index, self.core.term

    async def _via_leader(self, command, **arguments):
        """Have the leader propose; wait until the entry is applied here."""
        placed = await self.call_leader(command, WRITE_TIMEOUT, **arguments)
        return await self._wait_applied(placed["index"], placed["term"])

    async def call_leader(self, command, timeout: float, **arguments):
        """
        Call a peer command on the leader; its KMSError comes back as one,
        and a leader that cannot be reached is a 503.
        """
        link = self._links.get(self.core.leader)
        if self.core.leader < 0 or link is None:
            raise unavailable("no leader: the cluster has no quorum right now")
        try:
            return await link.call(command, timeout, self.reactor, **arguments)
        except peer.RemoteKMSError as e:
            raise peer.kms_error_of(e) from None
        except Exception as e:
            raise unavailable(f"cannot reach the leader: {e.__class__.__name__}") from None

    async def propose_membership(self, change) -> None:
        """
        Propose a single-server membership change here (the leader) and
        wait until it is committed and applied.
        """
        try:
            index = self.core.propose_config(change)
        except NotLeader:
            raise unavailable("leadership changed; try again") from None
        except RaftError as e:
            raise KMSError(409, f"membership change refused: {e}") from None
        d = self._wait_applied(index, self.core.term)
        self._kick()
        await d

    def _wait_applied(self, index: int, term: int):
        d = defer.Deferred()
        if index <= self._applied:
            recent = self._recent.get(index)
            if recent is None:
                d.errback(unavailable("write outcome unknown: try again"))
            else:
                _settle(d, term, recent[0], recent[1])
            return d
        self._waiters.setdefault(index, []).append((term, d))
        d.addTimeout(WRITE_TIMEOUT, self.reactor, onTimeoutCancel=_timed_out)
        return d

    # -- reads and status -------------------------------------------------

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
            self._inbound[message.src] = via
        if self._failed is None and not self._joining and not self._stopped:
            self.core.step(message)
            self._kick()

    def ready(self, write: bool) -> bool:
        """Readiness for reads (state loaded) or writes (a leader is known)."""
        if self._failed is not None or self._joining or self.standing.refusal is not None:
            return False
        if not write:
            return True
        return self.core.leader >= 0

    def local_status(self):
        """This node's C{ServerStatusResponse}."""
        status = self.core.status()
        message = pb.ServerStatusResponse(
            Version=version.VERSION,
            APIVersion=version.API_VERSION,
            Host=self.host,
            Role=_role_name(status.role),
            Commit=self._applied,
            ID=self.node_id,
            LeaderID=status.leader,
            OS=platform.system().lower(),
            Arch=_go_arch(),
            CPUs=os.cpu_count() or 1,
            UsableCPUs=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
            HeapMemInUse=_rss_bytes(),
            HSMs=[self.hsm.name],
            ConfiguredHSMs=[self.hsm.name],
        )
        for node_id, address in self.config.addresses.items():
            if node_id in self.config.members:
                message.Nodes[node_id] = address
        message.UpTime.FromNanoseconds(int((time.monotonic() - self._started) * 1e9))
        if status.leader_contact_age is not None:
            age = status.leader_contact_age * self._tick_seconds
            message.LastHeartbeat.FromNanoseconds(int(age * 1e9))
        message.HeartbeatInterval.FromNanoseconds(int(self.settings.heartbeat * 1e9))
        message.ElectionTimeout.FromNanoseconds(int(self.settings.election_timeout * 1e9))
        return message

    async def _cluster_status(self):
        self.standing.check_serving()
        response = pb.ClusterStatusResponse()
        response.NodesUp[self.node_id].CopyFrom(self.local_status())
        config = self.config
        others = [(i, a) for i, a in config.addresses.items() if i in config.members and i != self.node_id]
        calls = [defer.ensureDeferred(self._remote_status(i, a)) for i, a in others]
        results = await defer.DeferredList(calls, consumeErrors=True)
        for (node_id, address), (ok, value) in zip(others, results):
            if ok and value is not None:
                response.NodesUp[node_id].CopyFrom(value)
            else:
                response.NodesDown[node_id] = address
        return response

    async def _remote_status(self, node_id, address):
        link = self._links.get(node_id)
        if link is None:
            return None
        answer = await link.call(peer.NodeStatus, 2.0, self.reactor)
        status = pb.ServerStatusResponse.FromString(answer["status"])
        return None if link.stranger or status.ID != node_id else status

    def cluster_status(self):
        """A Deferred ClusterStatusResponse gathered from every member."""
        return defer.ensureDeferred(self._cluster_status())

    # -- cluster membership -----------------------------------------------

    def cluster_command(self, command, request):
        """CLUSTER:ADDNODE and friends, from the API (SysAdmin checked)."""
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
        log.info("removed from cluster {cluster}: starting over as a fresh single-node cluster",
                 cluster=self.cluster_id)
        return defer.ensureDeferred(self.reset_to_fresh())

    def join_cluster(self, cluster_id: str, node_id: int, host: str):
        """The leader adds this fresh node to its cluster."""
        from minkms.server.membership import join

        return defer.ensureDeferred(join(self, cluster_id, node_id, host))


def _settle(d, expected_term, applied_term, result) -> None:
    if d.called:
        return
    if applied_term != expected_term:
        d.errback(unavailable("leadership changed before the write committed; it was not applied"))
    else:
        d.callback(result)


def _timed_out(d, timeout):
    d.errback(unavailable("write timed out waiting for a quorum; it may or may not have been applied"))


def _as_durable(recovered) -> DurableState:
    return DurableState(recovered.hard_state, recovered.snapshot, tuple(recovered.entries))


def _role_name(role: str) -> str:
    return {"PreCandidate": "Candidate"}.get(role, role)


def _go_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(machine, machine)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def open_node(settings, reactor) -> Node:
    """
    Open the volume and build the node; a fresh volume becomes a
    single-node cluster with this node as node 0 (DESIGN decision 9).
    """
    from minkms.server.membership import founding_records

    volume = open_volume_now(settings.volume, settings.hsm, reactor=reactor,
                             founding=founding_records(settings.host))
    try:
        node = Node(reactor, settings, volume, settings.hsm)
        node.check_membership()
    except BaseException:
        volume.close()
        raise
    return node
