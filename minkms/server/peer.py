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

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp

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


def remote_to_kms_error(failure):
    """Turn a L{RemoteKMSError} back into the KMSError it carries."""
    failure.trap(RemoteKMSError)
    status, _, message = str(failure.value).partition(" ")
    raise KMSError(int(status), message)


class PeerProtocol(amp.AMP):
    """
    One end of a peer connection.  Responders call into the node; nothing
    but L{Hello} is served until the other end has proved itself.
    """

    authenticated = False

    def __init__(self, node, auth_key: bytes, server_side: bool) -> None:
        super().__init__()
        self.node = node
        self._auth_key = auth_key
        self._server_side = server_side
        self.ready = defer.Deferred()

    def connectionMade(self):
        super().connectionMade()
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
            self.ready.addErrback(lambda f: None)

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
            self.node.receive_raft(data)
        return {}

    @Forward.responder
    def forward(self, data):
        self._require_auth()
        d = defer.maybeDeferred(self.node.propose_forwarded, data)
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

    def __call__(self, transport, addr):
        if peer_identity(transport) != self._expected:
            log.warn("refused a peer connection from {addr}: not a cluster node", addr=addr)
            return None
        return PeerProtocol(self._node, self._auth_key, server_side=True)


class _PeerFactory(Factory):
    noisy = False

    def __init__(self, node, auth_key):
        self._node = node
        self._auth_key = auth_key

    def buildProtocol(self, addr):
        return PeerProtocol(self._node, self._auth_key, server_side=False)


class PeerLink:
    """
    A kept-up connection to one other node, reconnecting with back-off.
    Raft messages sent while it is down are dropped (Raft resends).
    """

    def __init__(self, reactor, address: str, node, tls: ClientTLS, auth_key: bytes) -> None:
        from minkms.server.config import split_host_port

        host, port = split_host_port(address, "peer address")
        endpoint = wrapClientTLS(
            tls.creatorForNetloc(host.encode("idna"), port),
            HostnameEndpoint(reactor, host, port, timeout=5),
        )
        self.address = address
        self.protocol = None
        self._service = ClientService(
            endpoint,
            _PeerFactory(node, auth_key),
            retryPolicy=backoffPolicy(initialDelay=0.05, maxDelay=1.0, factor=2.0),
            prepareConnection=self._prepare,
            clock=reactor,
        )
        self._service.startService()

    def _prepare(self, protocol):
        self.protocol = None

        def authenticated(p):
            self.protocol = p

        protocol.ready.addCallback(authenticated)
        protocol.ready.addErrback(lambda f: None)
        return protocol.ready

    def usable(self):
        p = self.protocol
        return p if p is not None and p.authenticated and p.transport and p.transport.connected else None

    def send(self, data: bytes) -> bool:
        """Send a Raft message if connected; say whether it went out."""
        p = self.usable()
        if p is None:
            return False
        p.callRemote(RaftMessage, data=data)
        return True

    async def call(self, command, timeout: float, reactor, **kwargs):
        """Call C{command} on the node once connected, within C{timeout}."""
        d = self._service.whenConnected(failAfterFailures=3)
        d.addTimeout(timeout, reactor)
        protocol = await d
        await protocol.ready
        d = protocol.callRemote(command, **kwargs)
        d.addTimeout(timeout, reactor)
        return await d

    def close(self):
        """Stop reconnecting and drop the connection."""
        return self._service.stopService()


def peer_tls(hsm) -> ClientTLS:
    """The TLS settings a node uses to connect to other nodes."""
    from minkms.apikey import APIKey

    return ClientTLS(APIKey.parse(hsm.peer_api_key()), insecure=True, alpn=(ALPN_PEER,))
