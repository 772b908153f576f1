"""
The peer channel admits only holders of the cluster's HSM key: both ends
show the peer certificate derived from it.  A client with any other
certificate asking for ALPN C{minkms-raft/1} is dropped, and a node with
another HSM key can neither join nor be joined.
"""

import random
import socket
import ssl

from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, threads
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial import unittest

from minkms.apikey import APIKey, generate_api_key
from minkms.errors import KMSError
from minkms.hsm import SoftHSM
from minkms.server import peer
from minkms.tls import ALPN_PEER, PEER_SERVER_NAME
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import CLUSTER_ADDNODE
from tests.harness import InProcessServer, in_process_cluster, until


def _raft_handshake(port: int, api_key: APIKey, directory: str):
    """Connect asking for the peer protocol; return (ALPN, server identity, closed by server)."""
    import os

    from cryptography import x509

    from minkms.apikey import identity_of_certificate

    key_path, cert_path = os.path.join(directory, "k.pem"), os.path.join(directory, "c.pem")
    with open(key_path, "wb") as f:
        f.write(
            api_key.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    with open(cert_path, "wb") as f:
        f.write(api_key.certificate().public_bytes(serialization.Encoding.PEM))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(cert_path, key_path)
    context.set_alpn_protocols([ALPN_PEER.decode()])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=PEER_SERVER_NAME) as tls:
            alpn = tls.selected_alpn_protocol()
            server = identity_of_certificate(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)))
            try:
                tls.sendall(b"\x00\x04_ask\x00\x011\x00\x00")
                data = tls.recv(1024)
            except (ConnectionError, ssl.SSLError, OSError):
                data = b""
            return alpn, server, data == b""


class PeerChannelTests(unittest.TestCase):
    timeout = 60

    async def _stranger_dropped(self):
        server = InProcessServer(self)
        directory = self.mktemp()
        import os

        os.makedirs(directory)
        stranger = APIKey.parse(generate_api_key())
        alpn, server_identity, closed = await threads.deferToThread(_raft_handshake, server.port, stranger, directory)
        self.assertEqual(alpn, ALPN_PEER.decode())
        self.assertEqual(
            server_identity,
            APIKey.parse(server.hsm.peer_api_key()).identity,
            "the listener shows the peer certificate to the peer SNI",
        )
        self.assertTrue(closed, "a stranger asking for the peer protocol must be dropped")

    def test_stranger_dropped(self):
        return defer.ensureDeferred(self._stranger_dropped())

    async def _other_hsm_cannot_join(self):
        a = InProcessServer(self)
        b = InProcessServer(self, hsm=SoftHSM.generate())
        await a.wait_ready()
        await b.wait_ready()
        client = a.client()
        self.addCleanup(client.close)
        with self.assertRaises(KMSError) as e:
            await client.call(CLUSTER_ADDNODE, pb.AddClusterNodeRequest(Host=b.host))
        self.assertEqual(e.exception.status, 400)
        self.assertEqual(
            e.exception.message,
            f"cannot add {b.host}: it holds another HSM key (every node of a cluster needs the same one)",
        )
        self.assertEqual(a.node.members(), {0: a.host})
        self.assertEqual(b.node.members(), {0: b.host})

    def test_other_hsm_cannot_join(self):
        return defer.ensureDeferred(self._other_hsm_cannot_join())


class ForwardErrorTests(unittest.TestCase):
    """
    How a follower's call to its leader fails: a refusal comes back as the
    leader's KMSError; a network failure is a 503 that says whether the
    write may have been applied; a bug on either side is logged with its
    traceback and answered 500, and the link stays up.
    """

    timeout = 60

    async def follower_of_two(self):
        """A two-node cluster: the leader, and the follower a test calls from."""
        (leader, follower), _ = await in_process_cluster(self, 2)
        await follower.wait_ready()
        self.assertEqual(follower.node.core.leader, leader.node.node_id)
        return leader, follower

    def forward(self, follower, code=101, name="e", **changed):
        """Forward a CreateEnclave (by default) from the follower to its leader."""
        arguments = {
            "code": code,
            "enclave": "",
            "caller": follower.node.settings.sysadmin,
            "request": pb.CreateEnclaveRequest(Name=name).SerializeToString(),
            **changed,
        }
        return follower.node.call_leader(peer.Forward, 10, **arguments)

    async def applied_on(self, follower, placed):
        """Wait until the follower has applied the entry the leader placed."""
        await follower.node.writes.wait_applied(placed["index"], placed["term"])

    async def test_refusal_comes_back_as_the_leaders_error(self):
        leader, follower = await self.follower_of_two()
        await self.applied_on(follower, await self.forward(follower))
        with self.assertRaises(KMSError) as e:
            await self.forward(follower)
        self.assertEqual(e.exception, KMSError(409, "enclave already exists"))

    async def test_bug_on_the_leader_is_answered_500(self):
        leader, follower = await self.follower_of_two()
        with self.assertRaises(KMSError) as e:
            await self.forward(follower, code=999)
        self.assertEqual(e.exception.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1, "logged with its traceback")
        link = follower.node.peer_links()[leader.node.node_id]
        self.assertIsNotNone(link.usable(), "the link stays up")
        await self.applied_on(follower, await self.forward(follower, name="after"))
        self.assertIn("after", follower.node.state.state.enclaves)

    async def test_bug_on_the_follower_is_answered_500(self):
        leader, follower = await self.follower_of_two()
        with self.assertRaises(KMSError) as e:
            await self.forward(follower, code=None)
        self.assertEqual(e.exception, KMSError(500, "internal server error"))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1, "logged with its traceback")

    async def test_link_lost_after_sending(self):
        leader, follower = await self.follower_of_two()
        link = follower.node.peer_links()[leader.node.node_id]
        await until(link.usable, "the follower's link to the leader")
        d = self.forward(follower)
        link.usable().transport.abortConnection()
        with self.assertRaises(KMSError) as e:
            await d
        self.assertEqual(e.exception.status, 503)
        self.assertTrue(
            e.exception.message.startswith(f"lost the leader (node {leader.node.node_id}) after sending it the write"),
            e.exception.message,
        )
        self.assertTrue(e.exception.message.endswith(": it may or may not have been applied"))

    async def test_leader_unreachable_means_not_applied(self):
        leader, follower = await self.follower_of_two()
        link = follower.node.peer_links()[leader.node.node_id]
        await leader.stop()
        await until(lambda: link.usable() is None, "the follower saw the link drop")
        with self.assertRaises(KMSError) as e:
            await self.forward(follower)
        self.assertEqual(e.exception.status, 503)
        self.assertTrue(e.exception.message.endswith("the write was not applied"), e.exception.message)

    async def test_stopped_node_accepts_no_peer(self):
        """
        A peer connection that finishes its handshake after the node began
        to stop (its port may still be closing) is refused, not left open
        to a node that no longer answers.
        """
        leader, _ = await self.follower_of_two()
        await leader.stop()
        self.assertIsNone(leader.node.peer_protocol(object(), "127.0.0.1:1"))

    async def test_stopped_leader_takes_no_write(self):
        """
        A leader that is stopping answers a forwarded write 503 before
        proposing it: it could never commit it.
        """
        leader, follower = await self.follower_of_two()
        last = leader.node.core.log.last_index()
        await leader.stop()
        with self.assertRaises(KMSError) as e:
            await leader.node.submit_forwarded(101, "", follower.node.settings.sysadmin, b"")
        self.assertEqual(e.exception, KMSError(503, "node is shutting down; the write was not applied"))
        self.assertEqual(leader.node.core.log.last_index(), last, "nothing was proposed")


class ResponderTests(unittest.TestCase):
    """
    The responder decorator and the typed error answer, over an in-memory
    connection (L{iosim}): what any peer command answers when the node
    behind it refuses, breaks, or the peer has not authenticated.
    """

    def call(self, node, command, authenticated=True, **arguments):
        """
        Call C{command} from a plain AMP client on a L{peer.PeerProtocol}
        for C{node}, connected in memory; return the outcome (an answer or
        a Failure) and the server's protocol.
        """
        client, server, pump = iosim.connectedServerAndClient(
            lambda: peer.PeerProtocol(node, "", server_side=authenticated), amp.AMP
        )
        outcome = []
        d = client.callRemote(command, **arguments)
        if d is not None:
            d.addBoth(outcome.append)
        pump.flush()
        return (outcome or [None])[0], server

    def test_refusal_is_answered_as_typed_fields(self):
        class Refusing:
            def join_cluster(self, cluster_id, node_id, host):
                raise KMSError(409, "node is already part of another cluster")

        outcome, server = self.call(Refusing(), peer.Join, cluster_id="c", node_id=1, host="h:7373")
        self.assertEqual(outcome.value, KMSError(409, "node is already part of another cluster"))
        box = peer.Join.makeResponse(KMSError(409, "é"), server)
        self.assertEqual(dict(box), {b"error_status": b"409", b"error_message": "é".encode()})

    def test_bug_is_logged_and_answered_500_on_a_live_connection(self):
        outcome, server = self.call(None, peer.NodeStatus)
        self.assertEqual(outcome.value.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        self.assertFalse(server.transport.disconnecting, "the connection stays up")

    def test_unauthenticated_peer_is_refused(self):
        outcome, server = self.call(None, peer.NodeStatus, authenticated=False)
        outcome.trap(peer.PeerUnauthenticated)
        self.call(None, peer.RaftMessage, authenticated=False, data=b"ignored")
        self.assertEqual(self.flushLoggedErrors(), [], "a Raft message from it is ignored, not delivered")


class _RaftRecorder:
    """A node that keeps the Raft messages it receives, or fails on them if told to."""

    def __init__(self, fail: bool = False) -> None:
        self.received: list[tuple[bytes, object]] = []
        self.fail = fail
        self.standing = self

    def told_removed(self, protocol, reason):
        self.received.append((reason, None))

    def receive_raft(self, data, via=None):
        if self.fail:
            raise ZeroDivisionError("a bug in the node")
        self.received.append((data, via))


class RaftMessageTests(unittest.TestCase):
    """
    Raft messages between two L{peer.PeerProtocol}s, connected in memory:
    whatever their size, each arrives whole, once and in order, by the fast
    path or AMP's ordinary one, and the bytes are plain AMP.
    """

    def connect(self, node, authenticated=True, client=None):
        """A sending protocol connected to a receiving L{peer.PeerProtocol} for C{node}."""
        sender, receiver, pump = iosim.connectedServerAndClient(
            lambda: peer.PeerProtocol(node, "", server_side=authenticated),
            client or (lambda: peer.PeerProtocol(None, "", server_side=False)),
        )
        return sender, receiver, pump

    def test_every_size_arrives_whole_and_in_order(self):
        node = _RaftRecorder()
        sender, receiver, pump = self.connect(node)
        sizes = [0, 1, 383, 60_000, 60_001, 130_000, 50]
        messages = [bytes([i]) * size for i, size in enumerate(sizes)]
        for data in messages:
            sender.send_raft(data)
        pump.flush()
        self.assertEqual([data for data, _ in node.received], messages)
        self.assertEqual({id(via) for _, via in node.received}, {id(receiver)}, "the connection it came on")

    def test_box_is_the_one_amp_writes(self):
        for data in [b"", b"\x00\x00", b"x" * 383, b"y" * 60_000]:
            fast, plain = StringTransport(), StringTransport()
            protocol = peer.PeerProtocol(None, "", server_side=True)
            protocol.makeConnection(fast)
            protocol.send_raft(data)
            protocol = peer.PeerProtocol(None, "", server_side=True)
            protocol.makeConnection(plain)
            protocol.callRemote(peer.RaftMessage, data=data)
            self.assertEqual(fast.value(), plain.value(), len(data))

    def test_plain_amp_sender(self):
        """Boxes from plain AMP (C{callRemote}) arrive too, also when they ask for an answer."""
        node = _RaftRecorder()
        sender, _, pump = self.connect(node, client=amp.AMP)
        sender.callRemote(peer.RaftMessage, data=b"one")
        sender.callRemote(peer.RaftMessage, data=b"two" * 30_000)
        answers = []
        sender.callRemoteString(peer.RaftMessage.commandName, data=b"three").addCallback(answers.append)
        pump.flush()
        self.assertEqual([data for data, _ in node.received], [b"one", b"two" * 30_000, b"three"])
        self.assertEqual([set(a) for a in answers], [{b"_answer"}], "answered, with no fields")

    def test_bug_in_node_is_logged_and_connection_stays_up(self):
        node = _RaftRecorder(fail=True)
        sender, receiver, pump = self.connect(node)
        sender.send_raft(b"first")
        sender.send_raft(b"long" * 20_000)
        pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2, "logged with its traceback")
        self.assertFalse(receiver.transport.disconnecting, "the connection stays up")
        node.fail = False
        sender.send_raft(b"after")
        pump.flush()
        self.assertEqual([data for data, _ in node.received], [b"after"])

    def test_unauthenticated_peer_is_ignored(self):
        node = _RaftRecorder()
        sender, _, pump = self.connect(node, authenticated=False)
        sender.send_raft(b"short")
        sender.send_raft(b"long" * 20_000)
        pump.flush()
        self.assertEqual(node.received, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def stream(self):
        """The bytes of Raft messages of every size between other boxes, and what a node gets from them."""
        out = StringTransport()
        sender = peer.PeerProtocol(None, "", server_side=True)
        sender.makeConnection(out)
        sender.send_raft(b"a")
        sender.callRemote(peer.NotMember, reason="removed")
        sender.send_raft(b"")
        sender.callRemote(peer.RaftMessage, data=b"b" * 70_000)
        sender.callRemoteString(peer.RaftMessage.commandName, data=b"asked")
        sender.send_raft(b"\x00\x00" * 200)
        expected = [b"a", "removed", b"", b"b" * 70_000, b"asked", b"\x00\x00" * 200]
        return out.value(), expected

    def test_any_split_of_the_stream(self):
        """However the bytes are cut into reads, every box arrives once, whole and in order."""
        data, expected = self.stream()
        rng = random.Random(1)
        splits = [[], list(range(1, 200))]
        splits += [sorted(rng.sample(range(1, len(data)), rng.randint(1, 8))) for _ in range(300)]
        for cuts in splits:
            node = _RaftRecorder()
            receiver = peer.PeerProtocol(node, "", server_side=True)
            out = StringTransport()
            receiver.makeConnection(out)
            for start, end in zip([0, *cuts], [*cuts, len(data)]):
                receiver.dataReceived(data[start:end])
            self.assertEqual([message for message, _ in node.received], expected, cuts)
            self.assertIn(b"_answer", out.value(), "the box that asked is answered")

    def test_key_longer_than_amp_allows(self):
        """A box with a key AMP refuses drops the connection, as plain AMP does; what came before arrives."""
        node = _RaftRecorder()
        receiver = peer.PeerProtocol(node, "", server_side=True)
        transport = StringTransport()
        receiver.makeConnection(transport)
        receiver.dataReceived(peer.raft_box(b"first") + b"\x01\x00" + b"k" * 256)
        self.assertEqual(node.received, [(b"first", receiver)])
        self.assertTrue(transport.disconnecting)
