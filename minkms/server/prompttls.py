"""
TLS connections whose writes leave at the end of the reactor turn that
wrote them, or sooner when asked.

Twisted's default TLS transport gathers small writes and encrypts them at
the reactor's next turn, and a TCP transport hands its buffer to the
kernel only when the reactor next finds the socket writable: a message
written in one turn leaves in the next but one.  On the write path that
costs a hop at each step (the leader's appends, a follower's answer, the
client's response), and meanwhile the storage thread takes the
interpreter lock for its own work.

Our protocols write whole messages (an AMP box, an HTTP response in one
write), so they need no gathering: L{PromptTLS} encrypts each write at
once and tells the node's L{TurnSends}, which sends what every connection
wrote, once per connection, at the end of the turn (as many answers as
the turn made, back to back) or when L{TurnSends.flush} is called (the
Raft driver does after each batch of messages).
"""

from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer


class TurnSends:
    """
    The connections of one node that wrote during this reactor turn, sent
    in the order they first wrote.
    """

    def __init__(self, clock) -> None:
        self._clock = clock
        self._written: dict = {}
        self._call = None

    def written(self, connection: "PromptTLS") -> None:
        """C{connection} wrote: send it by the end of this turn."""
        self._written[connection] = None
        if self._call is None:
            self._call = self._clock.callLater(0, self._turn_ended)

    def flush(self) -> None:
        """Send now what every connection wrote so far."""
        written, self._written = self._written, {}
        for connection in written:
            connection.push()

    def _turn_ended(self) -> None:
        self._call = None
        self.flush()

    def stop(self) -> None:
        """Send what is left and leave no call pending (the node stops)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.flush()


class PromptTLS(TLSMemoryBIOProtocol):
    """A TLS connection that encrypts each write at once and sends it by the end of the turn."""

    def write(self, data) -> None:
        super().write(data)
        self.factory.sends.written(self)

    def push(self) -> None:
        """
        Send what was written so far, as the reactor would once the socket
        is writable.  What the kernel does not take now stays buffered and
        leaves when the socket is writable again; a connection lost
        meanwhile is found and closed by the reactor as usual.
        """
        tcp = self.transport
        if tcp is not None and getattr(tcp, "connected", False) and not getattr(tcp, "disconnected", True):
            tcp.doWrite()


class PromptTLSFactory(TLSMemoryBIOFactory):
    """Wraps a factory's protocols in L{PromptTLS}, sending through C{sends}."""

    protocol = PromptTLS

    def __init__(self, contextFactory, isClient: bool, wrappedFactory, sends: TurnSends) -> None:
        super().__init__(contextFactory, isClient, wrappedFactory)
        self.sends = sends


@implementer(IStreamClientEndpoint)
class PromptClientTLS:
    """
    C{wrapClientTLS} with L{PromptTLS}: connects over C{endpoint}, and
    fires with the wrapped protocol once the TCP connection is made (the
    handshake follows).
    """

    def __init__(self, creator, endpoint, sends: TurnSends) -> None:
        self._creator = creator
        self._endpoint = endpoint
        self._sends = sends

    def connect(self, factory):
        """Connect C{factory}'s protocol over TLS."""
        d = self._endpoint.connect(PromptTLSFactory(self._creator, True, factory, self._sends))
        d.addCallback(lambda tls: tls.wrappedProtocol)
        return d
