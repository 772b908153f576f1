"""
Cluster membership from the operator's side: C{minkms add}, C{minkms rm}
(DESIGN decision 9), the joining node's half of C{add}, and how a node
learns that it is not (or no longer) a member.

Adding a node: the leader first looks at the node over the peer channel
(L{peer.Hello}: its cluster, its node ID, what it holds).  A node that
holds data is refused unless forced; a member address that now answers as
another cluster's node (its C{kms.db} was deleted, the guide's reset) has
its old node ID removed through the log first.  Then the leader asks the
node to join (it adopts the cluster ID and the next free node ID and drops
its own state), adds it as a learner, waits until it has caught up, and
promotes it to voter.  One change at a time, each committed by a majority.

Standing (L{Standing}): every link starts with L{peer.Hello}.  A member
that hears from a node ID its cluster removed answers "removed", and that
node stops with C{server not part of cluster}; a single-node cluster that a
member of another cluster dials as its member was reset, and refuses to
serve its empty state until it is added again.
"""

from google.protobuf import unknown_fields
from twisted.logger import Logger
from twisted.python.failure import Failure

from minkms.client import network_reason
from minkms.errors import KMSError, StartupError, bad_request, not_implemented, unavailable
from minkms.raft.config import ConfigChange, single_node_config
from minkms.raft.core import bootstrap_state
from minkms.raft.ready import LEADER
from minkms.server import peer
from minkms.server.config import join_host_port, split_host_port
from minkms.wire.commands import (
    CLUSTER_ADDHSM,
    CLUSTER_ADDNODE,
    CLUSTER_EDIT,
    CLUSTER_REMOVEHSM,
    CLUSTER_REMOVENODE,
    CLUSTER_STATUS,
    Responders,
)

log = Logger()

CATCH_UP_TIMEOUT = 60.0
JOIN_TIMEOUT = 15.0
FORCE_FIELD = 15
"""
C{AddClusterNodeRequest} field that C{minkms add --force} sets (varint 1):
an extension kms-go never sends, so its requests keep the safe default.
"""
NOT_MEMBER = "server not part of cluster"
REMOVED_GRACE = 5.0
"""Seconds a removed node waits for C{minkms rm --delete}'s reset before it stops."""


def founding_records(host: str):
    """
    What L{minkms.storage.startup.load_volume} writes into a new C{kms.db}:
    the founding entry of a single-node cluster with node 0 at C{host}.
    """

    def records(cluster_id: str) -> list:
        durable = bootstrap_state(single_node_config(0, host, cluster_id))
        return list(durable.entries) + [durable.hard_state]

    return records


def force_requested(request) -> bool:
    """Whether an C{AddClusterNodeRequest} carries C{--force} (L{FORCE_FIELD})."""
    return any(f.field_number == FORCE_FIELD and f.data for f in unknown_fields.UnknownFieldSet(request))


def holdings(state) -> str:
    """What a node's state holds, in words (C{"3 enclaves, 12 keys"}), or C{""}."""
    enclaves = state.enclaves.values()
    counts = [
        (len(state.enclaves), "enclave", "enclaves"),
        (sum(len(e.keys) for e in enclaves), "key", "keys"),
        (sum(len(e.identities) for e in enclaves), "identity", "identities"),
        (sum(len(e.policies) for e in enclaves), "policy", "policies"),
    ]
    words = [f"{count} {one if count == 1 else many}" for count, one, many in counts if count]
    return ", ".join(words)


class Standing:
    """
    Whether this node is the member it believes to be, as the other nodes
    say in L{peer.Hello} and L{peer.NotMember}; and the refusal to serve
    that follows when it is not.

    @ivar refusal: C{None}, or why this node refuses reads and writes.
    """

    def __init__(self, node) -> None:
        self._node = node
        self.refusal = None
        self._stopping = None

    def check_serving(self) -> None:
        """Raise the 503 that a node which is not a member answers."""
        if self.refusal is not None:
            raise unavailable(self.refusal)

    def hello(self, member: bool) -> dict:
        """This node's L{peer.Hello} arguments."""
        return {"cluster_id": self._node.cluster_id, "node_id": self._node.node_id, "member": member}

    def welcome(self, protocol, cluster_id: str, node_id: int, member: bool) -> dict:
        """Answer a L{peer.Hello} from the node that dialled."""
        node = self._node
        removed = ""
        if cluster_id == node.cluster_id:
            removed = self._removal(node_id) or ""
        elif member and node.config.members == {node.node_id}:
            self._reset_noticed(cluster_id)
        return {
            "cluster_id": node.cluster_id,
            "node_id": node.node_id,
            "host": node.host,
            "members": len(node.config.members),
            "holds": holdings(node.state.state),
            "removed": removed,
        }

    def greeted(self, protocol, answer: dict, member: bool) -> bool:
        """
        The answer to our L{peer.Hello}; say whether the node at the other
        end is a stranger (not the member the link was made for).
        """
        if answer["removed"]:
            self.removed(answer["removed"])
            return True
        if not member or answer["cluster_id"] == self._node.cluster_id:
            return False
        address = protocol.transport.getPeer()
        log.warn(
            "the node at {address} answers as node {id} of another cluster: it is not part of this "
            "cluster until 'minkms add' adds it again",
            address=f"{address.host}:{address.port}",
            id=answer["node_id"],
        )
        return True

    def accept(self, message, via) -> bool:
        """
        Whether a Raft message that came over connection C{via} is for
        this node's cluster; a removed sender is told it was removed.
        """
        remote = via.remote
        if remote is None or remote["cluster_id"] != self._node.cluster_id:
            return False
        reason = self._removal(message.src)
        if reason is None:
            return True
        if not getattr(via, "told_not_member", False):
            via.told_not_member = True
            via.callRemote(peer.NotMember, reason=reason)
        return False

    def told_removed(self, protocol, reason: str) -> None:
        """A L{peer.NotMember} from a member of this node's cluster."""
        if protocol.remote is not None and protocol.remote["cluster_id"] == self._node.cluster_id:
            self.removed(reason)

    def removed(self, reason: str) -> None:
        """
        A member says its cluster removed this node: refuse to serve at
        once, and stop the process after L{REMOVED_GRACE} seconds unless the
        leader tells it to start over meanwhile (C{minkms rm --delete}).
        """
        if self._stopping is not None:
            return
        self.refusal = reason
        log.critical("{reason}: refusing to serve, stopping", reason=reason)
        self._stopping = self._node.reactor.callLater(REMOVED_GRACE, self._node.fail, reason)

    def cleared(self) -> None:
        """This node started over or was (re)added to a cluster: it serves again."""
        self.refusal = None
        self.close()

    def close(self) -> None:
        """Forget a pending stop (the node is stopping anyway, or serves again)."""
        if self._stopping is not None and self._stopping.active():
            self._stopping.cancel()
        self._stopping = None

    def _removal(self, node_id: int) -> str | None:
        """Why C{node_id} is no longer a member, if this member's log says it was removed."""
        node = self._node
        config = node.config
        if node_id == node.node_id or node.node_id not in config.members:
            return None
        if node_id < config.next_id and node_id not in config.members:
            return f"{NOT_MEMBER}: node {node_id} was removed from cluster {node.cluster_id}"
        return None

    def _reset_noticed(self, cluster_id: str) -> None:
        host = self._node.host
        if self.refusal is None:
            log.warn(
                "cluster {cluster} has this node as a member, but its kms.db is new: refusing to serve "
                "until 'minkms add {host}' adds it again",
                cluster=cluster_id,
                host=host,
            )
        self.refusal = (
            f"{NOT_MEMBER}: this node's kms.db was reset, but cluster {cluster_id} still has "
            f"{host} as a member; add it again with 'minkms add {host}'"
        )


def normalize_host(text: str) -> str:
    """C{host[:port]} with the default port, as members are recorded."""
    try:
        host, port = split_host_port(text, "host")
    except StartupError as e:
        raise bad_request(str(e)) from None
    return join_host_port(host, port)


node_commands = Responders()
"""The cluster rows of the command table, which the node runs (not the state machine)."""


async def run_cluster_command(node, code: int, request):
    """Run the responder of a cluster row; its answer (None for a write)."""
    responder = node_commands.get(code)
    if responder is None:
        raise bad_request(f"not a membership command: {code}")
    return await responder(node, request)


async def _forwarded(node, code: int, request) -> bool:
    """On a follower, run the command on the leader instead and say so."""
    if node.core.role == LEADER:
        return False
    await node.call_leader(
        peer.ClusterCommand, CATCH_UP_TIMEOUT + JOIN_TIMEOUT, code=code, request=request.SerializeToString()
    )
    return True


@node_commands.responder(CLUSTER_ADDNODE)
async def add_node_command(node, request) -> None:
    """CLUSTER:ADDNODE (C{minkms add}), on the leader."""
    if not await _forwarded(node, CLUSTER_ADDNODE, request):
        await add_node(node, normalize_host(request.Host), force_requested(request))


@node_commands.responder(CLUSTER_REMOVENODE)
async def remove_node_command(node, request) -> None:
    """CLUSTER:REMOVENODE (C{minkms rm}), on the leader."""
    if not await _forwarded(node, CLUSTER_REMOVENODE, request):
        await remove_node(node, normalize_host(request.Host), request.DeleteClusterOnHost)


@node_commands.responder(CLUSTER_EDIT)
async def edit_command(node, request) -> None:
    """CLUSTER:EDIT (C{minkms edit}), on the node it names, without consensus."""
    if normalize_host(request.Host) != node.host:
        raise bad_request(f"CLUSTER:EDIT for {request.Host} was sent to {node.host}: send it to that node")
    await node.edit_membership(list(request.RemoveIDs))


@node_commands.responder(CLUSTER_ADDHSM, CLUSTER_REMOVEHSM)
async def hsm_command(node, request) -> None:
    """CLUSTER:ADDHSM and CLUSTER:REMOVEHSM: not in a build with only the software HSM."""
    raise not_implemented("this build supports only the software HSM: HSMs cannot be added or removed")


@node_commands.responder(CLUSTER_STATUS)
async def cluster_status_command(node, request):
    """CLUSTER:STATUS: every member's status, as this node gathers it."""
    return await node.cluster_status()


async def _look_at(link, host: str, reactor) -> dict:
    """The L{peer.Hello} answer of the node at C{host}, or a KMSError in words."""
    try:
        return await link.greet(JOIN_TIMEOUT, reactor)
    except peer.PeerUnauthenticated:
        raise KMSError(
            400, f"cannot add {host}: it holds another HSM key (every node of a cluster needs the same one)"
        ) from None
    except peer.PeerUnavailable as e:
        raise unavailable(str(e)) from None
    except Exception as e:
        raise unavailable(f"cannot reach {host}: {network_reason(e)}") from None


def _check_joinable(node, host: str, other: dict, existing: int | None, force: bool) -> None:
    """
    Refuse to add a node that is a member already, belongs to a cluster,
    or holds data.  A node that adopted this cluster's ID in an earlier
    C{add} but never received its log (that add failed half-way) may join
    again.
    """
    if other["cluster_id"] == node.cluster_id:
        if existing is not None:
            raise KMSError(409, f"node {host} is already part of the cluster")
        if other["members"]:
            raise KMSError(
                409,
                f"node {host} was removed from this cluster and keeps its state: "
                "stop it, remove its kms.db and start it again",
            )
        return
    if other["host"] != host:
        raise bad_request(_wrong_host(other["host"], host))
    if other["members"] > 1:
        raise KMSError(
            409,
            f"node {host} is part of another cluster of {other['members']} nodes: "
            "stop it, remove its kms.db and start it again",
        )
    if other["holds"] and not force:
        raise KMSError(409, f"cannot add {host}: node holds {other['holds']}: remove its kms.db first, or pass --force")


def _wrong_host(started_as: str, added_as: str) -> str:
    return f"{NOT_MEMBER}: the node was started with --host {started_as}, but was added as {added_as}"


async def add_node(node, host: str, force: bool = False) -> None:
    """
    The leader's half of C{minkms add HOST}.  A member address whose node
    now answers as a fresh node (the guide's reset) is replaced: the old
    node ID is removed through the log, then the node joins under a new one.
    """
    link = node.peer_link(host, member=False)
    try:
        other = await _look_at(link, host, node.reactor)
        existing = node.config.node_at(host)
        _check_joinable(node, host, other, existing, force)
        if existing is not None:
            await node.propose_membership(ConfigChange.remove(existing))
            log.info("removed node {id} at {host}: the node there was reset", id=existing, host=host)
        new_id = node.config.next_id
        await link.call(peer.Join, JOIN_TIMEOUT, node.reactor, cluster_id=node.cluster_id, node_id=new_id, host=host)
    except KMSError:
        raise
    except Exception as e:
        raise unavailable(f"cannot reach {host}: {network_reason(e)}") from None
    finally:
        link.close()
    await node.propose_membership(ConfigChange.add_learner(new_id, host))
    await _caught_up(node, new_id, host)
    await node.propose_membership(ConfigChange.promote(new_id))
    log.info("added node {id} at {host}", id=new_id, host=host)


def _caught_up(node, new_id: int, host: str):
    """
    Fires once the learner C{new_id} holds every committed entry, as the
    leader's progress shows after each message and tick; fails with 503 if
    this node stops leading, or after L{CATCH_UP_TIMEOUT} on its clock.
    """

    def caught_up() -> bool:
        status = node.core.status()
        progress = status.progress.get(new_id)
        if progress is not None and progress.match >= status.commit:
            return True
        if status.role != LEADER:
            raise unavailable("leadership changed while the node was catching up; run 'minkms add' again")
        return False

    def too_slow(result, timeout):
        return Failure(unavailable(f"node {host} did not catch up in {timeout:.0f}s"))

    d = node.when(caught_up)
    d.addTimeout(CATCH_UP_TIMEOUT, node.reactor, onTimeoutCancel=too_slow)
    return d


async def remove_node(node, host: str, delete_cluster_on_host: bool = False) -> None:
    """
    The leader's half of C{minkms rm HOST}.  With C{delete_cluster_on_host}
    the removed node is then told to wipe the cluster's state and start over
    as a fresh single-node cluster; without, it keeps its state and will
    refuse to start again ("server not part of cluster").
    """
    node_id = node.config.node_at(host)
    if node_id is None:
        raise KMSError(404, f"node {host} is not part of the cluster")
    await node.propose_membership(ConfigChange.remove(node_id))
    log.info("removed node {id} at {host}", id=node_id, host=host)
    if not delete_cluster_on_host or node_id == node.node_id:
        return
    link = node.peer_link(host)
    try:
        await link.call(peer.Leave, JOIN_TIMEOUT, node.reactor)
    except KMSError:
        raise
    except Exception as e:
        raise KMSError(503, f"node {host} was removed, but could not be told to reset: {network_reason(e)}") from None
    finally:
        link.close()


async def join(node, cluster_id: str, node_id: int, host: str) -> None:
    """The new node's half of C{minkms add}: adopt the cluster, drop local state."""
    if host != node.host:
        raise bad_request(_wrong_host(node.host, host))
    config = node.config
    if config.members - {node.node_id}:
        raise KMSError(409, "node is already part of another cluster: stop it, remove its kms.db and start it again")
    await node.reset_to_join(cluster_id, node_id)
    node.standing.cleared()
    log.info("joined cluster {cluster} as node {id}", cluster=cluster_id, id=node_id)
