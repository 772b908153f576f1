"""
Why the Raft core refused a request.

The driver turns these into client answers (forward to the leader, retry,
503); none of them means the node's state is damaged.  A broken Raft
invariant is an L{InvariantViolation}, after which the node must stop.
"""

from minkms.raft.types import NO_NODE


class RaftError(Exception):
    """The base of every refusal from the Raft core."""


class NotLeader(RaftError):
    """
    Only the leader may do this; C{leader_id} is the leader this node knows
    of, or L{NO_NODE}.
    """

    def __init__(self, leader_id: int = NO_NODE) -> None:
        super().__init__(f"not the leader (leader is {leader_id})")
        self.leader_id = leader_id


class ProposalDropped(RaftError):
    """
    The leader cannot take this proposal now (leadership transfer under way,
    too much uncommitted data, or an entry too large for one message).
    """


class ConfigChangeRejected(RaftError):
    """A membership change that the single-server change rules forbid now."""


class InvariantViolation(AssertionError):
    """
    The core found its own state or a peer's message contradicting a Raft
    invariant (for example, an order to truncate committed entries).
    """
