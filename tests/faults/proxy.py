"""
Partitions without firewall rules: a TCP proxy in front of each node's
advertised peer address.  Every node dials its peers from its own loopback
address (L{tests.faults.launch.bind_source}), so the proxy of node B tells
the link A->B from C->B by the connection's source address.  Cutting a
link stops forwarding in both directions without closing anything, as a
firewall that drops packets would; healing it lets the held bytes flow.
"""

from twisted.internet import protocol


class _Pipe(protocol.Protocol):
    """One end of a proxied connection; the other end is L{peer}."""

    peer = None

    def dataReceived(self, data):
        if self.peer is not None:
            self.peer.transport.write(data)

    def connectionLost(self, reason):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()
            self.peer.peer = None
        self.peer = None


class _Accepted(_Pipe):
    """The connection a node made to the proxy."""

    def __init__(self, proxy: "LinkProxy", source: str) -> None:
        self.proxy = proxy
        self.source = source
        self.upstream = None

    def connectionMade(self):
        self.transport.pauseProducing()
        self.proxy.accepted.add(self)
        if not self.proxy.is_cut(self.source):
            self.connect()

    def connect(self):
        """Open the upstream connection to the node behind the proxy."""
        if self.upstream is not None:
            return
        self.upstream = protocol.ClientCreator(self.proxy.reactor, _Pipe).connectTCP(*self.proxy.target)
        self.upstream.addCallbacks(self._joined, lambda failure: self.transport.loseConnection())

    def _joined(self, pipe):
        if self.transport is None or not self.transport.connected:
            pipe.transport.loseConnection()
            return
        pipe.peer, self.peer = self, pipe
        if self.proxy.is_cut(self.source):
            pipe.transport.pauseProducing()
        else:
            self.transport.resumeProducing()

    def freeze(self):
        """Stop forwarding both ways."""
        self.transport.pauseProducing()
        if self.peer is not None:
            self.peer.transport.pauseProducing()

    def thaw(self):
        """Forward again, held bytes first."""
        if self.peer is None:
            self.connect()
            return
        self.transport.resumeProducing()
        self.peer.transport.resumeProducing()

    def connectionLost(self, reason):
        self.proxy.accepted.discard(self)
        super().connectionLost(reason)


class _Factory(protocol.Factory):
    def __init__(self, proxy):
        self.proxy = proxy

    def buildProtocol(self, addr):
        return _Accepted(self.proxy, addr.host)


class LinkProxy:
    """
    Listens on C{listen} (a node's advertised address) and forwards to
    C{target} (where the node really listens), unless the dialing source
    address is cut off.
    """

    def __init__(self, reactor, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.reactor = reactor
        self.target = target
        self.cut: set[str] = set()
        self.accepted: set[_Accepted] = set()
        self.port = reactor.listenTCP(listen[1], _Factory(self), interface=listen[0])

    def is_cut(self, source: str) -> bool:
        """Whether the node dialing from C{source} is cut off from this one."""
        return source in self.cut

    def cut_from(self, source: str) -> None:
        """Drop everything between the node dialing from C{source} and this node."""
        self.cut.add(source)
        for connection in list(self.accepted):
            if connection.source == source:
                connection.freeze()

    def heal(self) -> None:
        """Forward every link again."""
        self.cut.clear()
        for connection in list(self.accepted):
            connection.thaw()

    def close(self):
        """Stop listening and drop every connection (a Deferred)."""
        for connection in list(self.accepted):
            connection.transport.abortConnection()
        return self.port.stopListening()
