"""
What C{minkms stat} shows: one node's C{ServerStatusResponse}, and the
cluster's, gathered from every member over the peer links.
"""

import os
import platform

from twisted.internet import defer

from minkms import version
from minkms.server import peer
from minkms.wire import kms_pb2 as pb

STATUS_TIMEOUT = 2.0
"""Seconds a member may take to answer before it is shown as down."""


def local_status(node) -> pb.ServerStatusResponse:
    """C{node}'s own status, as CLUSTER:STATUS shows it."""
    status = node.core.status()
    config = node.config
    message = pb.ServerStatusResponse(
        Version=version.VERSION,
        APIVersion=version.API_VERSION,
        Host=node.host,
        Role=_role_name(status.role),
        Commit=node.driver.applied,
        ID=node.node_id,
        LeaderID=status.leader,
        OS=platform.system().lower(),
        Arch=_go_arch(),
        CPUs=os.cpu_count() or 1,
        UsableCPUs=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        HeapMemInUse=_rss_bytes(),
        HSMs=[node.hsm.name],
        ConfiguredHSMs=[node.hsm.name],
    )
    for node_id, address in config.addresses.items():
        if node_id in config.members:
            message.Nodes[node_id] = address
    message.UpTime.FromNanoseconds(int(node.uptime() * 1e9))
    age = node.leader_contact_age()
    if age is not None:
        message.LastHeartbeat.FromNanoseconds(int(age * 1e9))
    message.HeartbeatInterval.FromNanoseconds(int(node.settings.heartbeat * 1e9))
    message.ElectionTimeout.FromNanoseconds(int(node.settings.election_timeout * 1e9))
    return message


async def cluster_status(node) -> pb.ClusterStatusResponse:
    """
    Every member's status; the ones that do not answer in time, and a
    node at a member's address that is not that member (its kms.db was
    reset), are down.
    """
    node.standing.check_serving()
    response = pb.ClusterStatusResponse()
    response.NodesUp[node.node_id].CopyFrom(local_status(node))
    config = node.config
    others = [(i, a) for i, a in config.addresses.items() if i in config.members and i != node.node_id]
    calls = [defer.ensureDeferred(_remote_status(node, i)) for i, _ in others]
    results = await defer.DeferredList(calls, consumeErrors=True)
    for (node_id, address), (ok, value) in zip(others, results):
        if ok and value is not None:
            response.NodesUp[node_id].CopyFrom(value)
        else:
            response.NodesDown[node_id] = address
    return response


async def _remote_status(node, node_id: int):
    link = node.peer_links().get(node_id)
    if link is None:
        return None
    answer = await link.call(peer.NodeStatus, STATUS_TIMEOUT, node.reactor)
    status = pb.ServerStatusResponse.FromString(answer["status"])
    return None if link.stranger or status.ID != node_id else status


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
