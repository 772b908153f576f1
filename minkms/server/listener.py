"""
One TLS listener per node, two protocols (DESIGN decision 1).

After the handshake, ALPN tells whether the other end is a peer node
(C{minkms-raft/1}) or an API client (anything else: HTTP/1.1).  A small
protocol waits for the handshake, reads the negotiated protocol and the
client's identity, and hands the connection to the AMP peer protocol or
to an HTTP channel, then forwards everything to it.

It also enforces the connection limits (L{minkms.server.limits}): a
handshake that does not finish in time is cut, and over the caps only
the peer and SysAdmin identities are kept; and API connections share a
budget of work per reactor turn (L{minkms.server.turns}) so that peer
traffic is never stuck behind them.
"""

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from minkms.server.limits import PROBATION, REFUSED, ConnectionLimits, ConnectionTable
from minkms.server.turns import TurnBudget
from minkms.tls import ALPN_PEER, peer_identity

log = Logger()


@implementer(IHandshakeListener)
class ProtocolSwitch(Protocol):
    """
    The wrapped protocol of every TLS connection: counts it, times its
    handshake, and picks HTTP or the peer protocol once the handshake is
    done.

    @ivar inner: the protocol the connection was handed to, once chosen.
    """

    inner = None
    _counted = False
    _timer = None
    _held: list[bytes] | None = None
    _budgeted = False

    def __init__(self, factory: "SwitchFactory", addr) -> None:
        self._factory = factory
        self._addr = addr
        self._address = getattr(addr, "host", str(addr))

    def connectionMade(self) -> None:
        _no_delay(self.transport)
        table = self._factory.table
        verdict, evicted = table.admit(self, self._address)
        if evicted is not None and evicted.transport is not None:
            evicted.transport.abortConnection()
        if verdict == REFUSED:
            self.transport.abortConnection()
            return
        self._counted = True
        if verdict == PROBATION:
            log.debug("connection from {addr} over the caps: kept only for a peer or the SysAdmin", addr=self._address)
        self._timer = self._factory.clock.callLater(
            self._factory.limits.handshake_timeout, self.transport.abortConnection
        )

    def handshakeCompleted(self) -> None:
        self._cancel_timer()
        if not self._counted:
            return
        identity = peer_identity(self.transport)
        if not self._factory.table.identified(self, identity in self._factory.privileged):
            self.transport.abortConnection()
            return
        self.inner = self._choose(identity)
        if self.inner is None:
            self.transport.abortConnection()
            return
        self.inner.makeConnection(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self._held is not None:
            self._held.append(data)
            return
        if self._budgeted and not self._factory.turns.allows():
            self._held = [data]
            self.transport.pauseProducing()
            self._factory.turns.wait(self._release)
            return
        self.inner.dataReceived(data)

    def _release(self) -> None:
        """Hand the API channel what arrived while its turn was postponed."""
        held, self._held = self._held, None
        if self.inner is None or held is None or self.transport is None:
            return
        self.transport.resumeProducing()
        for data in held:
            self.inner.dataReceived(data)

    def _choose(self, identity: str):
        if self.transport.negotiatedProtocol == ALPN_PEER:
            if self._factory.peer is None:
                return None
            return self._factory.peer(self.transport, self._addr)
        channel = self._factory.http.buildProtocol(self._addr)
        channel._minkms_identity = identity
        self._budgeted = True
        return channel

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason) -> None:
        self._cancel_timer()
        if self._counted:
            self._counted = False
            self._factory.table.release(self, self._address)
        self._held = None
        if self.inner is not None:
            self.inner.connectionLost(reason)


def _no_delay(transport) -> None:
    """Small request/response messages must not wait for Nagle's algorithm."""
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError):
        pass


class SwitchFactory(Factory):
    """
    Builds L{ProtocolSwitch}es over an HTTP factory (a L{Site}) and a peer
    protocol builder C{peer(transport, addr) -> protocol or None} that
    refuses (returns None for) connections not authenticated as a node.

    @param privileged: the identities kept when the connection caps are
        reached (the peer certificate's and the SysAdmin's).
    """

    def __init__(
        self, http, peer=None, limits: ConnectionLimits = ConnectionLimits(), privileged=frozenset(), clock=None
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.http = http
        self.peer = peer
        self.limits = limits
        self.privileged = frozenset(privileged)
        self.clock = clock
        self.table = ConnectionTable(limits)
        self.turns = TurnBudget(clock)

    def buildProtocol(self, addr):
        return ProtocolSwitch(self, addr)

    def doStart(self) -> None:
        self.http.doStart()

    def doStop(self) -> None:
        self.http.doStop()
