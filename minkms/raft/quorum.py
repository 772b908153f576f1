"""
Majority arithmetic: which index a majority holds, who won an election,
whether a majority is alive.  Only voters count; learners never do.
"""

from collections.abc import Callable, Collection, Mapping

WON = "won"
LOST = "lost"
PENDING = "pending"


def majority(voter_count: int) -> int:
    """How many voters make a quorum."""
    return voter_count // 2 + 1


def committed_index(voters: Collection[int], match_of: Callable[[int], int]) -> int:
    """
    The largest index that a majority of C{voters} has (0 without voters).

    The caller still has to check that the entry at that index belongs to
    the current term before committing it (Raft figure 8).
    """
    if not voters:
        return 0
    matches = sorted((match_of(v) for v in voters), reverse=True)
    return matches[majority(len(voters)) - 1]


def vote_outcome(voters: Collection[int], votes: Mapping[int, bool]) -> str:
    """L{WON}, L{LOST} or L{PENDING}, counting only the votes of C{voters}."""
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    needed = majority(len(voters))
    if granted >= needed:
        return WON
    if len(voters) - rejected < needed:
        return LOST
    return PENDING


def has_quorum(voters: Collection[int], responders: Collection[int]) -> bool:
    """Whether C{responders} include a majority of C{voters}."""
    return sum(1 for v in voters if v in responders) >= majority(len(voters))
