"""
The peer channel: AMP between the nodes of a cluster (DESIGN decisions 1, 2).

A node connects to each other member over the shared TLS listener with
ALPN C{minkms-raft/1} and the SNI L{minkms.tls.PEER_SERVER_NAME}.  Both ends
present the peer certificate derived from the HSM key (the listener picks
it by that SNI) and each checks that the other's certificate has the peer
identity: only holders of the cluster's HSM key can speak Raft.  The
listener drops anyone else; the connecting side aborts a listener that
shows another certificate.

Raft messages travel as opaque bytes (L{minkms.raft.codec}); values larger
than an AMP value (65,535 bytes) are split over several keys by
L{LongBytes}, so snapshots and large entries need no special case here.

Errors.  Every command is a L{PeerCommand}, and every responder is
registered with L{responder}.  A L{KMSError} raised by a responder is
answered as two typed fields, C{error_status} (an integer) and
C{error_message} (text), and C{callRemote} raises it again on the calling
node as the same L{KMSError}.  Any other exception in a responder is a bug:
it is logged with its traceback on the node where it happened and answered
as a 500, and the connection stays up.  A peer that has not authenticated
gets L{PeerUnauthenticated}.

One forward, end to end
=======================

A client sends C{KEY:CREATE} to node 2, a follower; node 0 leads.

 1. Node 2 (L{minkms.server.writes.WritePath}) sends the write as the
    client sent it::

        answer = await protocol.callRemote(
            Forward, code=201, enclave="e", caller=identity,
            request=CreateKeyRequest(Name="k").SerializeToString())

 2. On node 0, L{PeerProtocol.forward} waits until it has applied every
    committed entry, checks and prepares the command against its own
    state and proposes it.  It answers at once with where the entry went,
    C{{"index": 57, "term": 3}}: nothing is persisted or committed yet.  A
    refusal comes back instead as the typed error fields (C{409}, C{"key
    already exists"}), and C{callRemote} raises that L{KMSError}.

 3. Node 2 waits until it has applied the entry at index 57 itself
    (C{node.driver.wait_applied(57, 3)}).  Only then is the write committed
    on a quorum, and the apply result is what node 2 answers the client.  If
    the leader lost its leadership and another term's entry took index 57,
    node 2 answers 503 "leadership changed before the write committed; it
    was not applied".

Compatibility: the nodes of a cluster must run the same build.  There is no
version negotiation and no rolling upgrade from builds that had the
separate C{Forward}/C{ForwardWrite} commands or sent errors as a
C{"status message"} string: stop every node, upgrade, start them again.
"""

import functools
import struct

from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from minkms.client import network_reason
from minkms.errors import KMSError, internal
from minkms.server.prompttls import PromptClientTLS, TurnSends
from minkms.tls import ALPN_PEER, PEER_SERVER_NAME, ClientTLS, peer_identity

log = Logger()

_CHUNK = 60000


class LongBytes(amp.Argument):
    """
    Bytes of any length: the first 60,000 under the argument's own key (all
    of them, for nearly every value), the rest in further values numbered
    from 1 (C{name.1}, C{name.2}, ...).
    """

    def toBox(self, name, strings, objects, proto):
        data = objects.pop(amp._wireNameToPythonIdentifier(name))
        strings[name] = data[:_CHUNK]
        for number, start in enumerate(range(_CHUNK, len(data), _CHUNK), 1):
            strings[b"%s.%d" % (name, number)] = data[start : start + _CHUNK]

    def fromBox(self, name, strings, objects, proto):
        parts = [strings[name]]
        key = name + b".1"
        while key in strings:
            parts.append(strings[key])
            key = b"%s.%d" % (name, len(parts))
        objects[amp._wireNameToPythonIdentifier(name)] = b"".join(parts)


class PeerUnauthenticated(Exception):
    """The other end is not (yet) known to hold the cluster's HSM key."""


class PeerUnavailable(Exception):
    """The other node could not be reached."""


PEER_FAILURES = (
    defer.TimeoutError,
    defer.CancelledError,
    error.ConnectError,
    error.ConnectionClosed,
    amp.RemoteAmpError,
    amp.ProtocolSwitched,
    SSL.Error,
    OSError,
    PeerUnauthenticated,
    PeerUnavailable,
)
"""
What a call to another node fails with when the network or the other node
fails it (no answer in time, connection lost, refused, not a cluster node);
anything else is a bug on this side.
"""

_ERROR_STATUS = b"error_status"
_ERROR_MESSAGE = b"error_message"


class PeerCommand(amp.Command):
    """
    A peer command whose answer is either its C{response} or a
    L{KMSError} as the typed fields C{error_status} and C{error_message}
    (a responder returns the L{KMSError} to answer it; see L{responder}).
    """

    errors = {PeerUnauthenticated: b"UNAUTHENTICATED"}

    @classmethod
    def makeResponse(cls, objects, proto):
        if isinstance(objects, KMSError):
            return amp.AmpBox(
                {
                    _ERROR_STATUS: amp.Integer().toString(objects.status),
                    _ERROR_MESSAGE: amp.Unicode().toString(objects.message),
                }
            )
        return super().makeResponse(objects, proto)

    @classmethod
    def parseResponse(cls, box, protocol):
        if _ERROR_STATUS in box:
            raise KMSError(amp.Integer().fromString(box[_ERROR_STATUS]), amp.Unicode().fromString(box[_ERROR_MESSAGE]))
        return super().parseResponse(box, protocol)


def responder(command):
    """
    Register the decorated L{PeerProtocol} method as C{command}'s
    responder, with what every responder needs: a peer that has not
    authenticated is refused (or, for a command without an answer,
    ignored); a L{KMSError} is answered as typed fields; any other
    exception is logged with its traceback and answered as a 500.
    """

    def register(method):
        @functools.wraps(method)
        def respond(self, **arguments):
            if not self.authenticated:
                if not command.requiresAnswer:
                    return {}
                raise PeerUnauthenticated("the TLS handshake has not authenticated the peer")
            d = defer.maybeDeferred(method, self, **arguments)
            d.addErrback(_error_answer, command, self)
            return d

        return command.responder(respond)

    return register


def _error_answer(failure, command, protocol):
    """A responder's failure as the answer (see L{responder})."""
    if failure.check(KMSError):
        return failure.value
    if failure.check(PeerUnauthenticated):
        return failure
    _log_bug(failure, command, protocol)
    return internal(f"internal error on the other node while answering {command.__name__}: see its log")


def _log_bug(failure, command, protocol) -> None:
    log.failure(
        "answering {command} from {peer} failed",
        failure,
        command=command.__name__,
        peer=protocol.transport.getPeer() if protocol.transport else None,
    )


class RaftMessage(PeerCommand):
    """
    One encoded Raft message; no answer (Raft tolerates loss).

    The hot path of the channel: L{PeerProtocol.send_raft} writes the box
    of a message up to 60,000 bytes without building an L{amp.AmpBox}, and
    L{PeerProtocol.dataReceived} hands such a box to the node without
    AMP's parser and dispatch.  The bytes are the ones AMP itself would
    send, and any other C{RaftMessage} box (a longer message, or one that
    asks for an answer) takes AMP's ordinary way to the same responder.
    """

    arguments = [(b"data", LongBytes())]
    requiresAnswer = False


_RAFT_COMMAND = RaftMessage.commandName
_RAFT_DATA = b"data"
_VALUE_LENGTH = struct.Struct("!H").pack
_RAFT_BOX_HEAD = amp.AmpBox({amp.COMMAND: _RAFT_COMMAND}).serialize()[:-2] + _VALUE_LENGTH(len(_RAFT_DATA)) + _RAFT_DATA
_END_OF_BOX = b"\x00\x00"
_RAFT_VALUE_AT = len(_RAFT_BOX_HEAD) + 2


def _box_end(data: bytes, pos: int, size: int) -> int | None:
    """
    Where the AMP box that starts at C{pos} ends: None if it is not all in
    C{data}, -1 at a key longer than AMP allows (AMP's parser drops the
    connection for it).
    """
    while pos + 2 <= size:
        length = data[pos] << 8 | data[pos + 1]
        pos += 2
        if length == 0:
            return pos
        if length > amp.MAX_KEY_LENGTH:
            return -1
        pos += length + 2
        if pos > size:
            return None
        pos += data[pos - 2] << 8 | data[pos - 1]
    return None


def raft_box(data: bytes) -> bytes:
    """The AMP box of a L{RaftMessage} carrying C{data} (at most 60,000 bytes), as AMP would write it."""
    return b"".join((_RAFT_BOX_HEAD, _VALUE_LENGTH(len(data)), data, _END_OF_BOX))


PREPARED = 0
"""
L{Forward}'s C{code} for a state-machine command the follower prepared
itself (a restore from backup): C{request} is its encoding, proposed as it
is.
"""


class Forward(PeerCommand):
    """
    A write that a follower received, for the leader to propose.  Either a
    client's KMS command as the client sent it (C{code}, C{enclave},
    C{caller}, C{request}), which the leader checks and prepares against its
    own state, the newest; or, with C{code} L{PREPARED}, a command the
    follower prepared (C{request} is its encoding).

    The answer says where the leader placed the entry in its log (C{index},
    C{term}).  It comes as soon as the leader has proposed the entry, before
    the entry is persisted or committed anywhere: the follower acknowledges
    the write only once it has applied the entry at that place itself, and
    the term tells it whether the entry there is still this one.
    """

    arguments = [
        (b"code", amp.Integer()),
        (b"enclave", amp.Unicode()),
        (b"caller", amp.Unicode()),
        (b"request", LongBytes()),
    ]
    response = [(b"index", amp.Integer()), (b"term", amp.Integer())]


class NodeStatus(PeerCommand):
    """This node's C{ServerStatusResponse}, for C{CLUSTER:STATUS}."""

    arguments = []
    response = [(b"status", LongBytes())]


class ClusterCommand(PeerCommand):
    """
    A membership command (add/remove node) forwarded to the leader; the
    answer comes once the leader has carried it out.
    """

    arguments = [(b"code", amp.Integer()), (b"request", LongBytes())]
    response = []


class Leave(PeerCommand):
    """
    The leader tells a node it removed with C{DeleteClusterOnHost}: wipe
    the cluster's state and start over as a fresh single-node cluster.  The
    answer comes once the node has started over.
    """

    arguments = []
    response = []


class Join(PeerCommand):
    """
    The leader asks a fresh node to join: adopt the cluster ID and the
    node ID given, drop its own single-node state, and wait for the log.
    The answer comes once the node has reset its volume to join.
    """

    arguments = [(b"cluster_id", amp.Unicode()), (b"node_id", amp.Integer()), (b"host", amp.Unicode())]
    response = []


class Hello(PeerCommand):
    """
    The first call on every link, before anything else goes over it: who
    the dialling node is (its cluster ID and node ID), and whether it dials
    as a member of its cluster (C{member}) or only to look at the node
    (C{minkms add}).  The answer says who the listening node is (with its
    C{--host}), what it holds, and whether its cluster removed the
    dialling node (C{removed}).
    """

    arguments = [(b"cluster_id", amp.Unicode()), (b"node_id", amp.Integer()), (b"member", amp.Boolean())]
    response = [
        (b"cluster_id", amp.Unicode()),
        (b"node_id", amp.Integer()),
        (b"host", amp.Unicode()),
        (b"members", amp.Integer()),
        (b"holds", amp.Unicode()),
        (b"removed", amp.Unicode()),
    ]


class NotMember(PeerCommand):
    """
    A member tells a node that its cluster removed it (the node sent a
    Raft message as a node ID the cluster no longer has); no answer.
    """

    arguments = [(b"reason", amp.Unicode())]
    requiresAnswer = False


@implementer(IHandshakeListener)
class PeerProtocol(amp.AMP):
    """
    One end of a peer connection; responders call into the node.  The
    listening end is made only for a client that showed the peer
    certificate; the connecting end checks the listener's certificate once
    the TLS handshake is complete, and serves nothing before.
    """

    authenticated = False
    rejected = False
    _inbox = b""
    """The start of a box that is not yet whole (see L{dataReceived})."""
    _amp_only = False
    """Whether AMP's parser takes everything (after a key longer than AMP allows, on the way out)."""
    remote = None
    """The other node's L{Hello} (cluster ID, node ID), once exchanged."""
    stranger = False
    """Whether the other node is not the member this link was made for."""

    def __init__(self, node, peer_identity_expected: str, server_side: bool, member: bool = True) -> None:
        super().__init__()
        self.node = node
        self._expected = peer_identity_expected
        self._server_side = server_side
        self._member = member
        self.ready = defer.Deferred()
        self.lost = defer.Deferred()
        if server_side:
            self.authenticated = True
            self.ready.callback(self)

    def connectionMade(self):
        super().connectionMade()
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass

    def handshakeCompleted(self):
        if self._server_side:
            return
        if peer_identity(self.transport) != self._expected:
            log.warn(
                "peer {peer} is not a node of this cluster (wrong certificate): dropped", peer=self.transport.getPeer()
            )
            self.rejected = True
            self.transport.abortConnection()
            return
        self.authenticated = True
        if self.node is None:
            self.ready.callback(self)
            return
        standing = self.node.standing
        d = self.callRemote(Hello, **standing.hello(self._member))
        d.addCallback(self._greeted, standing)
        d.addErrback(lambda _: self.transport.abortConnection())

    def _greeted(self, answer, standing) -> None:
        self.remote = answer
        self.stranger = standing.greeted(self, answer, self._member)
        if not self.ready.called:
            self.ready.callback(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if not self.ready.called:
            self.ready.errback(reason)
        self.lost.callback(None)

    def send_raft(self, data: bytes) -> None:
        """
        Write one encoded Raft message (see L{RaftMessage}); it leaves by
        the end of the turn (L{minkms.server.prompttls}).
        """
        if len(data) > _CHUNK:
            self.callRemote(RaftMessage, data=data)
        elif self.transport is not None:
            self.transport.write(raft_box(data))

    def dataReceived(self, data):
        """
        Hand each whole box to AMP's parser, in order, but for a
        L{RaftMessage} box as L{send_raft} writes it: its data goes to the
        node straight away.  A box not yet whole waits for the rest.
        """
        if self._amp_only:
            super().dataReceived(data)
            return
        if self._inbox:
            data = self._inbox + data
        size = len(data)
        pos = others = 0
        while pos < size:
            if data.startswith(_RAFT_BOX_HEAD, pos):
                start = pos + _RAFT_VALUE_AT
                if start > size:
                    break
                end = start + (data[start - 2] << 8 | data[start - 1])
                if end + 2 > size:
                    break
                if data[end] == 0 and data[end + 1] == 0:
                    if others < pos:
                        super().dataReceived(data[others:pos])
                    self._raft_received(data[start:end])
                    pos = others = end + 2
                    continue
            end = _box_end(data, pos, size)
            if end is None:
                break
            if end < 0:
                self._amp_only = True
                self._inbox = b""
                super().dataReceived(data[others:])
                return
            pos = end
        if others < pos:
            super().dataReceived(data[others:pos])
        self._inbox = data[pos:]

    def _raft_received(self, data: bytes) -> None:
        """What the L{responder} of L{raft_message} does, without a Deferred."""
        if not self.authenticated:
            return
        try:
            self.node.receive_raft(data, via=self)
        except Exception:
            _log_bug(Failure(), RaftMessage, self)

    @responder(RaftMessage)
    def raft_message(self, data):
        self.node.receive_raft(data, via=self)
        return {}

    @responder(Hello)
    def hello(self, cluster_id, node_id, member):
        self.remote = {"cluster_id": cluster_id, "node_id": node_id}
        return self.node.standing.welcome(self, cluster_id, node_id, member)

    @responder(NotMember)
    def not_member(self, reason):
        self.node.standing.told_removed(self, reason)
        return {}

    @responder(Forward)
    async def forward(self, code, enclave, caller, request):
        index, term = await self.node.submit_forwarded(code, enclave, caller, request)
        return {"index": index, "term": term}

    @responder(NodeStatus)
    def node_status(self):
        return {"status": self.node.local_status().SerializeToString(deterministic=True)}

    @responder(ClusterCommand)
    async def cluster_command(self, code, request):
        await self.node.cluster_command_forwarded(code, request)
        return {}

    @responder(Leave)
    async def leave(self):
        await self.node.leave_cluster()
        self.node.standing.cleared()
        return {}

    @responder(Join)
    async def join(self, cluster_id, node_id, host):
        await self.node.join_cluster(cluster_id, node_id, host)
        return {}


class PeerListener:
    """
    The peer side of the shared listener: accepts a connection that asked
    for C{minkms-raft/1} only if its client certificate is the peer one.
    """

    def __init__(self, node, peer_identity_expected: str) -> None:
        self._node = node
        self._expected = peer_identity_expected
        self._open: set[PeerProtocol] = set()
        self._closed = False

    def __call__(self, transport, addr):
        if self._closed:
            return None
        if peer_identity(transport) != self._expected:
            log.warn("refused a peer connection from {addr}: not a cluster node", addr=addr)
            return None
        protocol = PeerProtocol(self._node, self._expected, server_side=True)
        self._open.add(protocol)
        protocol.lost.addCallback(lambda _: self._open.discard(protocol))
        return protocol

    def close_all(self) -> None:
        """
        Drop every accepted peer connection and refuse the ones that finish
        their TLS handshake later (the node is stopping: the port may still
        be closing, and a peer's link that reconnected then would stay up
        to a node that no longer answers).  Raft messages need no graceful
        close, and two nodes closing the same connection at once could each
        wait for the other's TLS close.
        """
        self._closed = True
        for protocol in list(self._open):
            if protocol.transport is not None:
                protocol.transport.abortConnection()


class _PeerFactory(Factory):
    noisy = False

    def __init__(self, node, peer_identity_expected: str, member: bool = True):
        self._node = node
        self._expected = peer_identity_expected
        self._member = member

    def buildProtocol(self, addr):
        return PeerProtocol(self._node, self._expected, server_side=False, member=self._member)


class PeerLink:
    """
    A kept-up, authenticated connection to one other node: it reconnects
    with back-off until closed.  Raft messages sent while it is down are
    dropped (Raft resends); calls wait for the connection, within a timeout.
    """

    INITIAL_DELAY = 0.05
    MAX_DELAY = 1.0

    def __init__(
        self,
        reactor,
        address: str,
        node,
        tls: ClientTLS,
        peer_identity_expected: str,
        member: bool = True,
        sends: TurnSends | None = None,
    ) -> None:
        from minkms.server.config import split_host_port

        host, port = split_host_port(address, "peer address")
        self._endpoint = PromptClientTLS(
            tls.creatorForNetloc(host.encode("idna"), port),
            HostnameEndpoint(reactor, host, port, timeout=5),
            sends or TurnSends(reactor),
        )
        self._factory = _PeerFactory(node, peer_identity_expected, member)
        self._member = member
        self._reactor = reactor
        self.address = address
        self.protocol = None
        self._closed = False
        self._delay = self.INITIAL_DELAY
        self._attempt = None
        self._pending = None
        self._retry = None
        self._waiting: list[defer.Deferred] = []
        self._connect()

    def _connect(self) -> None:
        self._retry = None
        if self._closed:
            return
        self._attempt = self._endpoint.connect(self._factory)
        self._attempt.addCallback(self._handshaking)
        self._attempt.addCallbacks(self._connected, self._lost)

    def _handshaking(self, protocol):
        self._pending = protocol
        return protocol.ready

    def _connected(self, protocol) -> None:
        self._attempt = self._pending = None
        if self._closed:
            protocol.transport.loseConnection()
            return
        self.protocol = protocol
        self._delay = self.INITIAL_DELAY
        protocol.lost.addBoth(self._lost)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(protocol)

    def _lost(self, reason) -> None:
        rejected = self._pending is not None and self._pending.rejected
        self._attempt = self._pending = None
        self.protocol = None
        if rejected:
            self._fail_waiting(
                PeerUnauthenticated(f"{self.address} is not a node of this cluster: it holds another HSM key")
            )
        elif not self._member and hasattr(reason, "value"):
            self._fail_waiting(PeerUnavailable(f"cannot reach {self.address}: {network_reason(reason.value)}"))
        if self._closed or self._retry is not None:
            return
        self._retry = self._reactor.callLater(self._delay, self._connect)
        self._delay = min(self._delay * 2, self.MAX_DELAY)

    def usable(self):
        """The authenticated protocol, or None while disconnected."""
        p = self.protocol
        return p if p is not None and p.transport is not None and p.transport.connected else None

    @property
    def stranger(self) -> bool:
        """Whether the node now at this address is not the member the link is for."""
        p = self.usable()
        return p is not None and p.stranger

    @property
    def remote(self):
        """The L{Hello} of the node at this address, or None while disconnected."""
        p = self.usable()
        return None if p is None else p.remote

    def send(self, data: bytes) -> bool:
        """Send a Raft message if connected to the member; say whether it went out."""
        p = self.usable()
        if p is None or p.stranger:
            return False
        p.send_raft(data)
        return True

    def when_connected(self, timeout: float, reactor) -> defer.Deferred:
        """The authenticated protocol, once connected (within C{timeout})."""
        protocol = self.usable()
        if protocol is not None:
            return defer.succeed(protocol)
        waiter = defer.Deferred()
        self._waiting.append(waiter)
        waiter.addTimeout(timeout, reactor)
        return waiter

    async def greet(self, timeout: float, reactor) -> dict:
        """
        The other node's answer to our L{Hello}, once connected within
        C{timeout}.  A link made with C{member=False} fails at its first
        failed connection (L{PeerUnavailable}, in words) instead of retrying.
        """
        return (await self.when_connected(timeout, reactor)).remote

    async def call(self, command, timeout: float, reactor, **kwargs):
        """Call C{command} on the node once connected, within C{timeout}."""
        protocol = await self.when_connected(timeout, reactor)
        d = protocol.callRemote(command, **kwargs)
        d.addTimeout(timeout, reactor)
        return await d

    def close(self) -> None:
        """Stop reconnecting and drop the connection (see L{PeerListener.close_all})."""
        self._closed = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._pending is not None and self._pending.transport is not None:
            self._pending.transport.abortConnection()
        if self._attempt is not None:
            self._attempt.cancel()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abortConnection()
        self._fail_waiting(PeerUnavailable(f"link to {self.address} closed"))

    def _fail_waiting(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(error)


def peer_tls(hsm) -> ClientTLS:
    """
    The TLS settings a node uses to connect to other nodes: the peer
    certificate, the peer protocol, and the SNI that asks the listener for
    its peer certificate (checked by L{PeerProtocol}, not by OpenSSL).
    """
    from minkms.apikey import APIKey

    return ClientTLS(APIKey.parse(hsm.peer_api_key()), insecure=True, alpn=(ALPN_PEER,), server_name=PEER_SERVER_NAME)


def peer_credentials(hsm):
    """The listener's half: the peer certificate and key, as server credentials."""
    from minkms.apikey import APIKey
    from minkms.tls import ServerCredentials

    key = APIKey.parse(hsm.peer_api_key())
    return ServerCredentials([key.certificate()], key.private_key)
