"""
Cluster membership: who votes, who only replicates, and where each node lives.

A L{ClusterConfig} is carried whole (never as a delta) in the C{data} of an
C{ENTRY_CONFIG} log entry and in L{SnapshotMeta.config}, encoded by
L{encode_config} as canonical JSON, for example::

    {"addresses":{"0":"a:7373","1":"b:7373"},"cluster_id":"c1",
     "learners":[1],"next_id":2,"voters":[0]}

Membership changes one server at a time (L{ConfigChange}): a new node joins
as a learner, which receives the log but does not vote, and is promoted to
voter by a further change once it has caught up.  L{ConfigChange.apply}
checks the structural rules (no duplicate ids or addresses, never zero
voters); the timing rules (one uncommitted change at a time, only after the
leader committed in its term) belong to the core.
"""

import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

from minkms.raft.errors import ConfigChangeRejected


def _node_set(nodes: Iterable[int]) -> frozenset[int]:
    return frozenset(nodes)


def _frozen_addresses(addresses: Mapping[int, str]) -> Mapping[int, str]:
    return MappingProxyType({int(k): str(v) for k, v in sorted(addresses.items())})


@attrs.frozen
class ClusterConfig:
    """
    The membership of a cluster at one point of its log.

    @ivar voters: the nodes whose majority decides elections and commits.
    @ivar learners: members that receive the log but never vote.
    @ivar addresses: node id -> C{host:port} of every member.
    @ivar next_id: the smallest node id never handed out, so ids are never
        reused ("an ID represents a unique node for all time").
    @ivar cluster_id: the identity that a joining node adopts.
    """

    voters: frozenset[int] = attrs.field(factory=frozenset, converter=_node_set)
    learners: frozenset[int] = attrs.field(factory=frozenset, converter=_node_set)
    addresses: Mapping[int, str] = attrs.field(factory=dict, converter=_frozen_addresses, hash=False)
    next_id: int = 0
    cluster_id: str = ""

    @property
    def members(self) -> frozenset[int]:
        """Voters and learners: every node the leader replicates to."""
        return self.voters | self.learners

    def address_of(self, node_id: int) -> str | None:
        """The C{host:port} of a member, or None for a stranger."""
        return self.addresses.get(node_id)

    def node_at(self, address: str) -> int | None:
        """The member listening at C{address}, or None."""
        for node_id, known in self.addresses.items():
            if known == address and node_id in self.members:
                return node_id
        return None


EMPTY_CONFIG = ClusterConfig()
"""The membership of a node that has not joined any cluster yet."""


def single_node_config(node_id: int, address: str, cluster_id: str = "") -> ClusterConfig:
    """The membership of a freshly formed one-node cluster (design decision 9)."""
    return ClusterConfig(
        voters={node_id},
        addresses={node_id: address},
        next_id=node_id + 1,
        cluster_id=cluster_id,
    )


ADD_LEARNER = "add-learner"
PROMOTE = "promote"
REMOVE = "remove"


@attrs.frozen
class ConfigChange:
    """
    One single-server membership change.

    @ivar action: L{ADD_LEARNER}, L{PROMOTE} or L{REMOVE}.
    @ivar address: the new node's C{host:port} (for L{ADD_LEARNER} only).
    """

    action: str
    node_id: int
    address: str = ""

    @classmethod
    def add_learner(cls, node_id: int, address: str) -> "ConfigChange":
        """Add a non-voting member that will catch up before promotion."""
        return cls(ADD_LEARNER, node_id, address)

    @classmethod
    def promote(cls, node_id: int) -> "ConfigChange":
        """Turn a caught-up learner into a voter."""
        return cls(PROMOTE, node_id)

    @classmethod
    def remove(cls, node_id: int) -> "ConfigChange":
        """Remove a voter or learner (possibly the leader itself)."""
        return cls(REMOVE, node_id)

    def apply(self, config: ClusterConfig) -> ClusterConfig:
        """
        The configuration after this change.

        @raise ConfigChangeRejected: if the change does not fit C{config}.
        """
        node = self.node_id
        if self.action == ADD_LEARNER:
            if node in config.members:
                raise ConfigChangeRejected(f"node {node} is already a member")
            if node < 0:
                raise ConfigChangeRejected(f"invalid node id {node}")
            if self.address and config.node_at(self.address) is not None:
                raise ConfigChangeRejected(f"address {self.address} is already a member")
            addresses = dict(config.addresses)
            addresses[node] = self.address
            return attrs.evolve(
                config,
                learners=config.learners | {node},
                addresses=addresses,
                next_id=max(config.next_id, node + 1),
            )
        if self.action == PROMOTE:
            if node not in config.learners:
                raise ConfigChangeRejected(f"node {node} is not a learner")
            return attrs.evolve(config, voters=config.voters | {node}, learners=config.learners - {node})
        if self.action == REMOVE:
            if node not in config.members:
                raise ConfigChangeRejected(f"node {node} is not a member")
            if config.voters == {node}:
                raise ConfigChangeRejected("cannot remove the last voter")
            addresses = {k: v for k, v in config.addresses.items() if k != node}
            return attrs.evolve(
                config,
                voters=config.voters - {node},
                learners=config.learners - {node},
                addresses=addresses,
            )
        raise ConfigChangeRejected(f"unknown membership change {self.action!r}")


def encode_config(config: ClusterConfig) -> bytes:
    """Canonical JSON (sorted keys, no spaces): equal configs, equal bytes."""
    document = {
        "voters": sorted(config.voters),
        "learners": sorted(config.learners),
        "addresses": {str(k): v for k, v in sorted(config.addresses.items())},
        "next_id": config.next_id,
        "cluster_id": config.cluster_id,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode_config(data: bytes) -> ClusterConfig:
    """
    The inverse of L{encode_config}; empty bytes are the empty configuration.

    @raise ValueError: on malformed data.
    """
    if not data:
        return EMPTY_CONFIG
    try:
        document = json.loads(data.decode("utf-8"))
        voters = frozenset(int(v) for v in document["voters"])
        learners = frozenset(int(v) for v in document["learners"])
        addresses = {int(k): str(v) for k, v in document["addresses"].items()}
        next_id = int(document["next_id"])
        cluster_id = str(document.get("cluster_id", ""))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed cluster configuration: {e}") from None
    if voters & learners:
        raise ValueError("malformed cluster configuration: a node is both voter and learner")
    return ClusterConfig(voters, learners, addresses, next_id, cluster_id)
