"""
What a node allows a connection before it knows who is calling, and the
table that enforces the connection caps (see docs/network-limits.md).

The table is pure bookkeeping: the listener asks it whether to admit a
new connection, tells it the identity once the TLS handshake is done, and
closes whatever the table says to close.
"""

from collections import OrderedDict

import attrs

NORMAL = "normal"
PROBATION = "probation"
REFUSED = "refused"


@attrs.frozen
class ConnectionLimits:
    """
    The limits of the listener, settable under C{limits:} in config.yaml.

    @ivar handshake_timeout: seconds from accept to a finished TLS handshake.
    @ivar request_timeout: seconds for a request's headers to arrive: from the
        handshake for the first request, from its first byte for later ones.
    @ivar body_timeout: seconds for a whole request body, however it trickles.
    @ivar idle_timeout: seconds a kept-alive HTTP connection may sit between
        requests.
    @ivar max_connections: open connections above which only the peer and
        SysAdmin identities are kept.
    @ivar max_connections_per_address: the same, per source IP address.
    @ivar reserved_connections: connections beyond the caps that may be in
        their handshake at once, waiting to show a peer or SysAdmin identity.
    @ivar listen_backlog: the kernel's queue of connections not yet accepted.
    """

    handshake_timeout: float = 10.0
    request_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 120.0
    max_connections: int = 4096
    max_connections_per_address: int = 512
    reserved_connections: int = 64
    listen_backlog: int = 1024


DURATIONS = ("handshake_timeout", "request_timeout", "body_timeout", "idle_timeout")
COUNTS = ("max_connections", "max_connections_per_address", "reserved_connections", "listen_backlog")


class ConnectionTable:
    """
    Counts open connections, in total and per source address.

    A connection that arrives while a cap is reached is admitted on
    probation, at most C{reserved_connections} at a time: once its handshake
    shows a privileged identity (a peer node or the SysAdmin) it stays,
    otherwise it is closed.  When the reserve is full, the oldest connection
    on probation is evicted for the newcomer, so strangers that never finish
    their handshake cannot hold the reserve against a SysAdmin who does.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self._limits = limits
        self.total = 0
        self._by_address: dict[str, int] = {}
        self._probation: OrderedDict = OrderedDict()

    def count(self, address: str) -> int:
        """Open connections from C{address}."""
        return self._by_address.get(address, 0)

    def admit(self, connection, address: str):
        """
        Decide on a new connection from C{address}.

        @return: C{(verdict, evicted)}: L{NORMAL}, L{PROBATION} or
            L{REFUSED}, and a connection on probation the caller must close
            to make room, or C{None}.
        """
        limits = self._limits
        evicted = None
        over = self.total >= limits.max_connections or self.count(address) >= limits.max_connections_per_address
        if over:
            if limits.reserved_connections < 1:
                return REFUSED, None
            if len(self._probation) >= limits.reserved_connections:
                evicted, _ = self._probation.popitem(last=False)
            self._probation[connection] = True
        self.total += 1
        self._by_address[address] = self.count(address) + 1
        return (PROBATION if over else NORMAL), evicted

    def identified(self, connection, privileged: bool) -> bool:
        """The handshake of C{connection} is done: whether it may stay."""
        if self._probation.pop(connection, None) is None:
            return True
        return privileged

    def release(self, connection, address: str) -> None:
        """C{connection}, admitted by L{admit}, has closed."""
        self._probation.pop(connection, None)
        self.total -= 1
        left = self.count(address) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)


DESCRIPTOR_MARGIN = 64
"""Descriptors kept for everything but inbound connections: kms.db and its
lock, outbound peer links, the thread pool, logs."""


def fit_to_descriptors(limits: ConnectionLimits, available: int) -> ConnectionLimits:
    """
    Lower the connection caps, if need be, so that inbound connections
    (the caps plus the reserve) cannot use up the C{available} file
    descriptors: otherwise a flood of connections would make the kernel
    refuse the SysAdmin's before the caps are ever reached.
    """
    budget = max(available - DESCRIPTOR_MARGIN, 2)
    if limits.max_connections + limits.reserved_connections <= budget:
        return limits
    reserved = min(limits.reserved_connections, max(budget // 8, 1))
    total = budget - reserved
    return attrs.evolve(
        limits,
        max_connections=total,
        max_connections_per_address=min(limits.max_connections_per_address, total),
        reserved_connections=reserved,
    )
