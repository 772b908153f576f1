"""
One TLS listener per node, two protocols (DESIGN decision 1).

After the handshake, ALPN tells whether the other end is a peer node
(C{minkms-raft/1}) or an API client (anything else: HTTP/1.1).  A small
protocol waits for the first application bytes, reads the negotiated
protocol and hands the connection to the AMP peer protocol or to an HTTP
channel, then forwards everything to it.
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from minkms.tls import ALPN_PEER

log = Logger()


class ProtocolSwitch(Protocol):
    """
    The wrapped protocol of every TLS connection: picks HTTP or the peer
    protocol once the handshake is done.

    @ivar inner: the protocol the connection was handed to, once chosen.
    """

    inner = None

    def __init__(self, factory: "SwitchFactory", addr) -> None:
        self._factory = factory
        self._addr = addr

    def connectionMade(self) -> None:
        _no_delay(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.inner is None:
            self.inner = self._choose()
            if self.inner is None:
                self.transport.abortConnection()
                return
            self.inner.makeConnection(self.transport)
        self.inner.dataReceived(data)

    def _choose(self):
        if self.transport.negotiatedProtocol == ALPN_PEER:
            if self._factory.peer is None:
                return None
            return self._factory.peer(self.transport, self._addr)
        return self._factory.http.buildProtocol(self._addr)

    def connectionLost(self, reason) -> None:
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
    """

    def __init__(self, http, peer=None) -> None:
        self.http = http
        self.peer = peer

    def buildProtocol(self, addr):
        return ProtocolSwitch(self, addr)

    def doStart(self) -> None:
        self.http.doStart()

    def doStop(self) -> None:
        self.http.doStop()
