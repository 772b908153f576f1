"""
The peer channel admits only holders of the cluster's HSM key: both ends
show the peer certificate derived from it.  A client with any other
certificate asking for ALPN C{minkms-raft/1} is dropped, and a node with
another HSM key can neither join nor be joined.
"""

import socket
import ssl

from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, threads
from twisted.trial import unittest

from minkms.apikey import APIKey, generate_api_key
from minkms.errors import KMSError
from minkms.hsm import SoftHSM
from minkms.tls import ALPN_PEER, PEER_SERVER_NAME
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import CLUSTER_ADDNODE
from tests.harness import InProcessServer


def _raft_handshake(port: int, api_key: APIKey, directory: str):
    """Connect asking for the peer protocol; return (ALPN, server identity, closed by server)."""
    import os

    from cryptography import x509

    from minkms.apikey import identity_of_certificate

    key_path, cert_path = os.path.join(directory, "k.pem"), os.path.join(directory, "c.pem")
    with open(key_path, "wb") as f:
        f.write(api_key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
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
        alpn, server_identity, closed = await threads.deferToThread(
            _raft_handshake, server.port, stranger, directory)
        self.assertEqual(alpn, ALPN_PEER.decode())
        self.assertEqual(server_identity, APIKey.parse(server.hsm.peer_api_key()).identity,
                         "the listener shows the peer certificate to the peer SNI")
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
        self.assertEqual(e.exception.message, f"cannot add {b.host}: it holds another HSM key "
                                              "(every node of a cluster needs the same one)")
        self.assertEqual(a.node.members(), {0: a.host})
        self.assertEqual(b.node.members(), {0: b.host})

    def test_other_hsm_cannot_join(self):
        return defer.ensureDeferred(self._other_hsm_cannot_join())
