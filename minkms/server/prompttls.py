"""
TLS connections whose writes can leave before the reactor's next turn.

Twisted's default TLS transport gathers small writes and encrypts them at
the reactor's next turn, and a TCP transport hands its buffer to the
kernel only when the reactor next finds the socket writable: a message
written in one turn leaves in the next but one.  On the write path that
costs a node a turn at each hop (the leader's appends, a follower's
answer, the client's response), and between those turns the storage
thread takes the interpreter lock for its own work.

Our protocols write whole messages (an AMP box, an HTTP response in one
write), so they need no gathering: L{PromptTLS} encrypts each write at
once, and L{push} hands what a connection holds to the kernel now.
"""

from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer


class PromptTLS(TLSMemoryBIOProtocol):
    """A TLS connection that encrypts each write at once and can send it at once (L{push})."""

    def push(self) -> None:
        """
        Send what was written so far, as the reactor would at its next
        turn.  What the kernel does not take now stays buffered and leaves
        when the socket is writable again; a connection lost meanwhile is
        found and closed by the reactor as usual.
        """
        tcp = self.transport
        if tcp is not None and getattr(tcp, "connected", False) and not getattr(tcp, "disconnected", True):
            tcp.doWrite()


class PromptTLSFactory(TLSMemoryBIOFactory):
    """Wraps a factory's protocols in L{PromptTLS}."""

    protocol = PromptTLS


def push(transport) -> None:
    """
    Send now what was written to C{transport} if it is a L{PromptTLS};
    any other transport sends it at the reactor's next turn.
    """
    now = getattr(transport, "push", None)
    if now is not None:
        now()


@implementer(IStreamClientEndpoint)
class PromptClientTLS:
    """
    C{wrapClientTLS} with L{PromptTLS}: connects over C{endpoint}, and
    fires with the wrapped protocol once the TCP connection is made (the
    handshake follows).
    """

    def __init__(self, creator, endpoint) -> None:
        self._creator = creator
        self._endpoint = endpoint

    def connect(self, factory):
        """Connect C{factory}'s protocol over TLS."""
        d = self._endpoint.connect(PromptTLSFactory(self._creator, True, factory))
        d.addCallback(lambda tls: tls.wrappedProtocol)
        return d
