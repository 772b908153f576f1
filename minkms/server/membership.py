"""
Cluster membership from the operator's side: C{minkms add}, C{minkms rm}
(DESIGN decision 9), and the joining node's half of C{add}.

Adding a node: the leader asks the new node, over the peer channel, to join
(it must be a fresh single-node cluster with the same HSM key, which the
peer channel proves, and started with the C{--host} used in C{minkms add});
the node adopts the cluster ID and the next free node ID and drops its own
state; the leader adds it as a learner, waits until it has caught up, and
promotes it to voter.  One change at a time, each committed by a majority.
"""

import time

from twisted.internet import task
from twisted.logger import Logger

from minkms.errors import KMSError, StartupError, bad_request, not_implemented, unavailable
from minkms.raft.config import ConfigChange
from minkms.raft.ready import LEADER
from minkms.server import peer
from minkms.server.config import join_host_port, split_host_port

log = Logger()

CATCH_UP_TIMEOUT = 60.0
JOIN_TIMEOUT = 15.0


def normalize_host(text: str) -> str:
    """C{host[:port]} with the default port, as members are recorded."""
    try:
        host, port = split_host_port(text, "host")
    except StartupError as e:
        raise bad_request(str(e)) from None
    return join_host_port(host, port)


async def run_cluster_command(node, code: int, request) -> None:
    """Run a membership command on the leader (forwarding it if needed)."""
    if code in (5, 6):
        raise not_implemented("this build supports only the software HSM: HSMs cannot be added or removed")
    if code == 4:
        if normalize_host(request.Host) != node.host:
            raise bad_request(f"CLUSTER:EDIT for {request.Host} was sent to {node.host}: send it to that node")
        await node.edit_membership(list(request.RemoveIDs))
        return
    if node.core.role != LEADER:
        await node.call_leader(peer.ClusterCommand, CATCH_UP_TIMEOUT + JOIN_TIMEOUT,
                               code=code, request=request.SerializeToString())
        return
    if code == 1:
        await add_node(node, normalize_host(request.Host))
    elif code == 2:
        await remove_node(node, normalize_host(request.Host), request.DeleteClusterOnHost)
    else:
        raise bad_request(f"not a membership command: {code}")


async def add_node(node, host: str) -> None:
    """The leader's half of C{minkms add HOST}."""
    config = node.config
    if config.node_at(host) is not None:
        raise KMSError(409, f"node {host} is already part of the cluster")
    new_id = config.next_id
    link = node.peer_link(host)
    try:
        await link.call(peer.Join, JOIN_TIMEOUT, node.reactor,
                        cluster_id=node.cluster_id, node_id=new_id, host=host)
    except peer.RemoteKMSError as e:
        raise peer.kms_error_of(e) from None
    except KMSError:
        raise
    except peer.PeerUnauthenticated:
        raise KMSError(400, f"cannot add {host}: it holds another HSM key "
                            "(every node of a cluster needs the same one)") from None
    except Exception as e:
        raise KMSError(503, f"cannot reach {host} on the peer channel: {e.__class__.__name__}"
                            " (is it running, with the same HSM key?)") from None
    finally:
        link.close()
    await node.propose_membership(ConfigChange.add_learner(new_id, host))
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    while True:
        status = node.core.status()
        progress = status.progress.get(new_id)
        if progress is not None and progress.match >= status.commit:
            break
        if status.role != LEADER:
            raise unavailable("leadership changed while the node was catching up; run 'minkms add' again")
        if time.monotonic() > deadline:
            raise unavailable(f"node {host} did not catch up in {CATCH_UP_TIMEOUT:.0f}s")
        await task.deferLater(node.reactor, 0.05, lambda: None)
    await node.propose_membership(ConfigChange.promote(new_id))
    log.info("added node {id} at {host}", id=new_id, host=host)


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
    except peer.RemoteKMSError as e:
        raise peer.kms_error_of(e) from None
    except Exception as e:
        raise KMSError(503, f"node {host} was removed, but could not be told to reset: "
                            f"{e.__class__.__name__}") from None
    finally:
        link.close()


async def join(node, cluster_id: str, node_id: int, host: str) -> None:
    """The new node's half of C{minkms add}: adopt the cluster, drop local state."""
    if host != node.host:
        raise bad_request(
            f"server not part of cluster: the node was started with --host {node.host}, "
            f"but was added as {host}"
        )
    config = node.config
    if config.members - {node.node_id}:
        raise KMSError(409, "node is already part of another cluster: stop it, remove its kms.db and start it again")
    await node.reset_to_join(cluster_id, node_id)
    log.info("joined cluster {cluster} as node {id}", cluster=cluster_id, id=node_id)
