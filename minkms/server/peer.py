"""
The peer channel: AMP between the nodes of a cluster (DESIGN decisions 1, 2).

A node connects to each other member over the shared TLS listener with
ALPN C{minkms-raft/1}, presenting the peer certificate derived from the
HSM key; the listener drops anyone else.  The connecting side checks the
listener in turn: the first command, L{Hello}, exchanges MACs over a TLS
exporter value with a key derived from the HSM key, so each side proves it
holds the cluster's HSM key and the proof is bound to this very session.

Raft messages travel as opaque bytes (L{minkms.raft.codec}); values larger
than an AMP value (65,535 bytes) are split over several keys by
L{LongBytes}, so snapshots and large entries need no special case here.
"""

import hmac

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.internet.interfaces import IHandshakeListener
from twisted.protocols import amp
from zope.interface import implementer

from minkms.errors import KMSError
from minkms.tls import ALPN_PEER, ClientTLS, peer_identity

log = Logger()

LABEL_PEER_AUTH = b"minkms/v1/peer-channel-auth"
EXPORTER_LABEL = b"EXPORTER-minkms-peer-auth"
_CHUNK = 60000


class LongBytes(amp.Argument):
    """Bytes of any length, stored as a count and numbered AMP values."""

    def toBox(self, name, strings, objects, proto):
        data = objects.pop(amp._wireNameToPythonIdentifier(name))
        parts = [data[i:i + _CHUNK] for i in range(0, len(data), _CHUNK)] or [b""]
        strings[name] = b"%d" % len(parts)
        for i, part in enumerate(parts):
            strings[name + b".%d" % i] = part

    def fromBox(self, name, strings, objects, proto):
        count = int(strings[name])
        objects[amp._wireNameToPythonIdentifier(name)] = b"".join(
            strings[name + b".%d" % i] for i in range(count)
        )


class PeerUnauthenticated(Exception):
    """The other end did not prove it holds the cluster's HSM key."""


class RemoteKMSError(Exception):
    """A KMSError raised on the other node, carried as C{status message}."""


class Hello(amp.Command):
    """Mutual proof of the HSM key, bound to this TLS session."""

    arguments = [(b"proof", amp.String())]
    response = [(b"proof", amp.String())]
    errors = {PeerUnauthenticated: b"UNAUTHENTICATED"}


class RaftMessage(amp.Command):
    """One encoded Raft message; no answer (Raft tolerates loss)."""

    arguments = [(b"data", LongBytes())]
    requiresAnswer = False


class Forward(amp.Command):
    """
    A follower's client write for the leader to propose; answers where the
    entry went (index, term) once it is appended on the leader.
    """

    arguments = [(b"data", LongBytes())]
    response = [(b"index", amp.Integer()), (b"term", amp.Integer())]
    errors = {RemoteKMSError: b"KMS_ERROR", PeerUnauthenticated: b"UNAUTHENTICATED"}


class ForwardWrite(amp.Command):
    """
    A client's write command as the client sent it, for the leader to
    check and prepare against its own state (the newest) and propose;
    answers where the entry went (index, term).
    """

    arguments = [
        (b"code", amp.Integer()),
        (b"enclave", amp.Unicode()),
        (b"caller", amp.Unicode()),
        (b"request", LongBytes()),
    ]
    response = [(b"index", amp.Integer()), (b"term", amp.Integer())]
    errors = {RemoteKMSError: b"KMS_ERROR", PeerUnauthenticated: b"UNAUTHENTICATED"}


class NodeStatus(amp.Command):
    """This node's C{ServerStatusResponse}, for C{CLUSTER:STATUS}."""

    arguments = []
    response = [(b"status", LongBytes())]
    errors = {PeerUnauthenticated: b"UNAUTHENTICATED"}


class ClusterCommand(amp.Command):
    """A membership command (add/remove node) forwarded to the leader."""

    arguments = [(b"code", amp.Integer()), (b"request", LongBytes())]
    response = []
    errors = {RemoteKMSError: b"KMS_ERROR", PeerUnauthenticated: b"UNAUTHENTICATED"}


class Leave(amp.Command):
    """
    The leader tells a node it removed with C{DeleteClusterOnHost}: wipe
    the cluster's state and start over as a fresh single-node cluster.
    """

    arguments = []
    response = []
    errors = {RemoteKMSError: b"KMS_ERROR", PeerUnauthenticated: b"UNAUTHENTICATED"}


class Join(amp.Command):
    """
    The leader asks a fresh node to join: adopt the cluster ID and the
    node ID given, drop its own single-node state, and wait for the log.
    """

    arguments = [(b"cluster_id", amp.Unicode()), (b"node_id", amp.Integer()), (b"host", amp.Unicode())]
    response = []
    errors = {RemoteKMSError: b"KMS_ERROR", PeerUnauthenticated: b"UNAUTHENTICATED"}


def _exporter(transport) -> bytes:
    return transport.getHandle().export_keying_material(EXPORTER_LABEL, 32)


def _proof(key: bytes, role: bytes, transport) -> bytes:
    return hmac.new(key, role + _exporter(transport), "sha256").digest()


def _to_remote(failure):
    failure.trap(KMSError)
    raise RemoteKMSError(f"{failure.value.status} {failure.value.message}")


def kms_error_of(error: RemoteKMSError) -> KMSError:
    """The KMSError a L{RemoteKMSError} carries from the other node."""
    status, _, message = str(error).partition(" ")
    return KMSError(int(status), message)


@implementer(IHandshakeListener)
class PeerProtocol(amp.AMP):
    """
    One end of a peer connection.  Responders call into the node; nothing
    but L{Hello} is served until the other end has proved itself.  The
    connecting end says L{Hello} once the TLS handshake is complete (the
    exporter value exists only then).
    """

    authenticated = False

    def __init__(self, node, auth_key: bytes, server_side: bool) -> None:
        super().__init__()
        self.node = node
        self._auth_key = auth_key
        self._server_side = server_side
        self.ready = defer.Deferred()
        self.lost = defer.Deferred()

    def connectionMade(self):
        super().connectionMade()
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass

    def handshakeCompleted(self):
        if not self._server_side:
            d = self.callRemote(Hello, proof=_proof(self._auth_key, b"client", self.transport))
            d.addCallbacks(self._check_server_proof, self._hello_failed)

    def _check_server_proof(self, answer):
        expected = _proof(self._auth_key, b"server", self.transport)
        if not hmac.compare_digest(answer["proof"], expected):
            self._hello_failed(PeerUnauthenticated("bad server proof"))
            return
        self.authenticated = True
        self.ready.callback(self)

    def _hello_failed(self, reason):
        log.warn("peer {peer} failed to authenticate: {reason}", peer=self.transport.getPeer(), reason=reason)
        self.transport.abortConnection()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if not self.ready.called:
            self.ready.errback(reason)
            if self._server_side:
                self.ready.addErrback(lambda f: None)
        self.lost.callback(None)

    def _require_auth(self):
        if not self.authenticated:
            raise PeerUnauthenticated("say Hello first")

    @Hello.responder
    def hello(self, proof):
        expected = _proof(self._auth_key, b"client", self.transport)
        if not self._server_side or not hmac.compare_digest(proof, expected):
            self.transport.loseConnection()
            raise PeerUnauthenticated("bad client proof")
        self.authenticated = True
        return {"proof": _proof(self._auth_key, b"server", self.transport)}

    @RaftMessage.responder
    def raft_message(self, data):
        if self.authenticated:
            self.node.receive_raft(data, via=self)
        return {}

    @Forward.responder
    def forward(self, data):
        self._require_auth()
        d = defer.maybeDeferred(self.node.propose_forwarded, data)
        d.addCallback(lambda placed: {"index": placed[0], "term": placed[1]})
        d.addErrback(_to_remote)
        return d

    @ForwardWrite.responder
    def forward_write(self, code, enclave, caller, request):
        self._require_auth()
        d = defer.maybeDeferred(self.node.submit_forwarded, code, enclave, caller, request)
        d.addCallback(lambda placed: {"index": placed[0], "term": placed[1]})
        d.addErrback(_to_remote)
        return d

    @NodeStatus.responder
    def node_status(self):
        self._require_auth()
        return {"status": self.node.local_status().SerializeToString(deterministic=True)}

    @ClusterCommand.responder
    def cluster_command(self, code, request):
        self._require_auth()
        d = defer.maybeDeferred(self.node.cluster_command_forwarded, code, request)
        d.addCallback(lambda _: {})
        d.addErrback(_to_remote)
        return d

    @Leave.responder
    def leave(self):
        self._require_auth()
        d = defer.maybeDeferred(self.node.leave_cluster)
        d.addCallback(lambda _: {})
        d.addErrback(_to_remote)
        return d

    @Join.responder
    def join(self, cluster_id, node_id, host):
        self._require_auth()
        d = defer.maybeDeferred(self.node.join_cluster, cluster_id, node_id, host)
        d.addCallback(lambda _: {})
        d.addErrback(_to_remote)
        return d


class PeerListener:
    """
    The peer side of the shared listener: accepts a connection that asked
    for C{minkms-raft/1} only if its client certificate is the peer one.
    """

    def __init__(self, node, peer_identity_expected: str, auth_key: bytes) -> None:
        self._node = node
        self._expected = peer_identity_expected
        self._auth_key = auth_key
        self._open: set[PeerProtocol] = set()

    def __call__(self, transport, addr):
        if peer_identity(transport) != self._expected:
            log.warn("refused a peer connection from {addr}: not a cluster node", addr=addr)
            return None
        protocol = PeerProtocol(self._node, self._auth_key, server_side=True)
        self._open.add(protocol)
        protocol.lost.addCallback(lambda _: self._open.discard(protocol))
        return protocol

    def close_all(self) -> None:
        """Drop every accepted peer connection (the node is stopping)."""
        for protocol in list(self._open):
            if protocol.transport is not None:
                protocol.transport.loseConnection()


class _PeerFactory(Factory):
    noisy = False

    def __init__(self, node, auth_key):
        self._node = node
        self._auth_key = auth_key

    def buildProtocol(self, addr):
        return PeerProtocol(self._node, self._auth_key, server_side=False)


class PeerLink:
    """
    A kept-up, authenticated connection to one other node: it reconnects
    with back-off until closed.  Raft messages sent while it is down are
    dropped (Raft resends); calls wait for the connection, within a timeout.
    """

    INITIAL_DELAY = 0.05
    MAX_DELAY = 1.0

    def __init__(self, reactor, address: str, node, tls: ClientTLS, auth_key: bytes) -> None:
        from minkms.server.config import split_host_port

        host, port = split_host_port(address, "peer address")
        self._endpoint = wrapClientTLS(
            tls.creatorForNetloc(host.encode("idna"), port),
            HostnameEndpoint(reactor, host, port, timeout=5),
        )
        self._factory = _PeerFactory(node, auth_key)
        self._reactor = reactor
        self.address = address
        self.protocol = None
        self._closed = False
        self._delay = self.INITIAL_DELAY
        self._attempt = None
        self._retry = None
        self._waiting: list[defer.Deferred] = []
        self._connect()

    def _connect(self) -> None:
        self._retry = None
        if self._closed:
            return
        self._attempt = self._endpoint.connect(self._factory)
        self._attempt.addCallback(lambda p: p.ready)
        self._attempt.addCallbacks(self._connected, self._lost)

    def _connected(self, protocol) -> None:
        self._attempt = None
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
        self._attempt = None
        self.protocol = None
        if self._closed or self._retry is not None:
            return
        self._retry = self._reactor.callLater(self._delay, self._connect)
        self._delay = min(self._delay * 2, self.MAX_DELAY)

    def usable(self):
        """The authenticated protocol, or None while disconnected."""
        p = self.protocol
        return p if p is not None and p.transport is not None and p.transport.connected else None

    def send(self, data: bytes) -> bool:
        """Send a Raft message if connected; say whether it went out."""
        p = self.usable()
        if p is None:
            return False
        p.callRemote(RaftMessage, data=data)
        return True

    async def call(self, command, timeout: float, reactor, **kwargs):
        """Call C{command} on the node once connected, within C{timeout}."""
        protocol = self.usable()
        if protocol is None:
            waiter = defer.Deferred()
            self._waiting.append(waiter)
            waiter.addTimeout(timeout, reactor)
            protocol = await waiter
        d = protocol.callRemote(command, **kwargs)
        d.addTimeout(timeout, reactor)
        return await d

    def close(self) -> None:
        """Stop reconnecting and drop the connection."""
        self._closed = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.loseConnection()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(PeerUnavailable(f"link to {self.address} closed"))


class PeerUnavailable(Exception):
    """The other node could not be reached."""


def peer_tls(hsm) -> ClientTLS:
    """The TLS settings a node uses to connect to other nodes."""
    from minkms.apikey import APIKey

    return ClientTLS(APIKey.parse(hsm.peer_api_key()), insecure=True, alpn=(ALPN_PEER,))
