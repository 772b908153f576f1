"""
The network edge of a node (docs/network-limits.md): connections that do
not speak are closed, connection caps keep a reserve for the peer and
SysAdmin identities, bodies are judged before they are read and must
arrive in time, callers are authenticated before anything else is
judged, and the TLS 1.2 suites are ECDHE with AEAD only.

Every wait is on an observable event (a close, a reply) with a generous
deadline; nothing asserts on elapsed time.
"""

import http.client
import shutil
import socket
import ssl
import subprocess
import time

from twisted.internet import defer, reactor, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest
from zope.interface import implementer

from minkms.apikey import APIKey, generate_api_key
from minkms.client import KMSClient
from minkms.errors import ErrPermission
from minkms.hsm import SoftHSM
from minkms.server import peer
from minkms.server.http import MAX_BODY, MAX_DB_BODY
from minkms.server.limits import NORMAL, PROBATION, REFUSED, ConnectionLimits, ConnectionTable
from minkms.tls import ALPN_HTTP, ALPN_PEER, PEER_SERVER_NAME, ClientTLS
from minkms.wire import kms_pb2 as pb
from tests.harness import InProcessServer, ProcessNode, write_config
from tests.test_conformance import (
    CLUSTER_STATUS,
    KEY_STATUS,
    RawClient,
    ServerTestCase,
    body_of,
    frame,
    unhex,
)

PERMISSION = ErrPermission.message
CLOSE_DEADLINE = 60.0
"""How long a test waits for a close that the server should make within seconds."""


@implementer(IHandshakeListener)
class IdleClient(Protocol):
    """A client that connects (and shakes hands, over TLS) and then says nothing."""

    def __init__(self):
        self.handshake = defer.Deferred()
        self.lost = defer.Deferred()

    def handshakeCompleted(self):
        self.handshake.callback(self)

    def connectionLost(self, reason):
        if not self.handshake.called:
            self.handshake.errback(reason)
        self.lost.callback(None)

    def close(self):
        if self.transport is not None and not self.lost.called:
            self.transport.abortConnection()
        return self.lost


class LimitedServerCase(ServerTestCase):
    """A single node started with the C{limits:} section L{limits}."""

    limits = ""

    async def setUp(self):
        config = write_config(self.mktemp(), extra="limits:\n" + self.limits)
        self.server = InProcessServer(self, extra_args=["--config", config])
        await self.server.wait_ready()
        self.root = self.client()
        self.root_identity = self.server.api_key.identity

    async def idle(self, tls: ClientTLS | None = None, server_name: bytes = b"127.0.0.1") -> IdleClient:
        """An idle connection: plain TCP, or TLS (returned once the handshake is done)."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.port, timeout=30)
        if tls is not None:
            endpoint = wrapClientTLS(tls.creatorForNetloc(server_name, self.server.port), endpoint)
        protocol = await endpoint.connect(Factory.forProtocol(IdleClient))
        self.addCleanup(protocol.close)
        if tls is not None:
            await protocol.handshake
        else:
            protocol.handshake.addErrback(lambda _: None)
        return protocol

    async def closed_by_server(self, client: IdleClient, what: str):
        """Wait (generously) until the server closes C{client}."""
        try:
            await client.lost.addTimeout(CLOSE_DEADLINE, reactor)
        except defer.TimeoutError:
            self.fail(f"the server kept {what} open")

    async def sysadmin_served(self):
        response = await self.raw().kms(frame(CLUSTER_STATUS))
        self.assertOK(response)

    async def peer_served(self):
        """A peer link (the peer certificate, ALPN minkms-raft/1) is served."""
        hsm = self.server.hsm
        link = peer.PeerLink(
            reactor, self.server.host, self.server.node, peer.peer_tls(hsm), APIKey.parse(hsm.peer_api_key()).identity
        )
        try:
            answer = await link.call(peer.NodeStatus, 30, reactor)
        finally:
            link.close()
        status = pb.ServerStatusResponse.FromString(answer["status"])
        self.assertEqual(status.Host, self.server.host)

    async def refused_connection(self, certificate):
        """A request with C{certificate} gets no answer: its connection is closed."""
        try:
            response = await self.raw(certificate).kms(frame(CLUSTER_STATUS))
        except (OSError, http.client.HTTPException):
            return
        self.fail(f"a connection over the caps was served: {response!r}")


class ConnectionCapTests(LimitedServerCase):
    """
    Over the caps, only the peer and SysAdmin identities get in; strangers'
    connections, even with a certificate, are closed after the handshake,
    and connections that never finish theirs cannot hold the reserve.
    """

    limits = (
        "  handshake_timeout: 10m\n  request_timeout: 10m\n"
        "  max_connections: 12\n  max_connections_per_address: 6\n  reserved_connections: 3\n"
    )

    async def test_reserve_for_peer_and_sysadmin(self):
        held = [await self.idle() for _ in range(3)]
        held += [await self.idle(ClientTLS(None, insecure=True)) for _ in range(3)]
        await self.refused_connection(generate_api_key())
        await self.refused_connection(None)
        await self.sysadmin_served()
        await self.peer_served()
        # Silent connections over the caps take the reserve, oldest first evicted.
        squatters = [await self.idle() for _ in range(5)]
        for squatter in squatters[:2]:
            await self.closed_by_server(squatter, "a connection evicted from the reserve")
        await self.sysadmin_served()
        await self.peer_served()
        for client in held:
            self.assertFalse(client.lost.called, "a connection within the caps was closed")


class IdleTimeoutTests(LimitedServerCase):
    """Connections that do not speak in time are closed; others are served."""

    limits = "  handshake_timeout: 1s\n  request_timeout: 1s\n  body_timeout: 2s\n"

    async def test_silent_tcp_closed(self):
        client = await self.idle()
        await self.closed_by_server(client, "a TCP connection that never started its handshake")
        await self.sysadmin_served()

    async def test_silent_tls_closed(self):
        client = await self.idle(ClientTLS(APIKey.parse(generate_api_key()), insecure=True))
        await self.closed_by_server(client, "a TLS connection that never sent a request")
        await self.sysadmin_served()

    async def test_silent_peer_alpn_closed(self):
        """ALPN minkms-raft/1 without the peer certificate, then silence."""
        tls = ClientTLS(self.server.api_key, insecure=True, alpn=(ALPN_PEER,), server_name=PEER_SERVER_NAME)
        client = await self.idle(tls)
        await self.closed_by_server(client, "a silent connection that asked for the peer protocol")
        await self.peer_served()

    async def test_trickling_headers_closed(self):
        client = await self.idle(ClientTLS(self.server.api_key, insecure=True, alpn=(ALPN_HTTP,)))
        client.transport.write(b"POST /v1/kms HTTP/1.1\r\nHost: x\r\n")
        await self.closed_by_server(client, "a request whose headers never ended")

    async def test_trickling_body_cut(self):
        """A body sent a byte at a time gets 408 at its deadline, not an idle timeout."""
        await self.trickled_body_cut(b"POST /v1/kms HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")

    async def test_trickling_chunked_body_cut(self):
        """The same for a chunked body, whose head Twisted's own parser reads (not the one-pass path)."""
        await self.trickled_body_cut(b"POST /v1/kms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n")

    async def trickled_body_cut(self, head: bytes):
        port, context = self.server.port, self.raw().context

        def trickle():
            with socket.create_connection(("127.0.0.1", port), timeout=CLOSE_DEADLINE) as sock:
                with context.wrap_socket(sock) as tls:
                    tls.sendall(head)
                    tls.setblocking(False)
                    deadline = time.monotonic() + CLOSE_DEADLINE
                    data = b""
                    while time.monotonic() < deadline:
                        try:
                            tls.sendall(b"\x00")
                        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                            pass
                        except OSError:
                            break
                        try:
                            chunk = tls.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                            pass
                        except OSError:
                            break
                        time.sleep(0.2)
                    return data

        data = await threads.deferToThread(trickle)
        self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)
        self.assertIn(b'{"message":"request body not received in time"}', data)
        await self.sysadmin_served()

    async def test_keep_alive_client_served(self):
        """
        The request deadline runs from a request's first byte: a client that
        keeps its connection open between requests for longer is served.
        """
        port, context = self.server.port, self.raw().context

        def two_requests():
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
            try:
                statuses = []
                for _ in range(2):
                    if statuses:
                        time.sleep(3)
                    connection.request("POST", "/v1/kms", frame(CLUSTER_STATUS))
                    response = connection.getresponse()
                    response.read()
                    statuses.append(response.status)
                return statuses
            finally:
                connection.close()

        self.assertEqual(await threads.deferToThread(two_requests), [200, 200])


class KeptAliveIdleTests(LimitedServerCase):
    """A kept-alive connection idle for longer than C{idle_timeout} after its last answer is closed."""

    limits = "  idle_timeout: 2s\n"

    async def test_idle_after_answers_closed(self):
        port, context = self.server.port, self.raw().context

        def served_then_idle():
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=CLOSE_DEADLINE)
            try:
                statuses = []
                for _ in range(2):
                    connection.request("POST", "/v1/kms", frame(CLUSTER_STATUS))
                    response = connection.getresponse()
                    response.read()
                    statuses.append(response.status)
                try:
                    while connection.sock.recv(65536):
                        pass
                except TimeoutError:
                    return statuses, "still open"
                return statuses, "closed"
            finally:
                connection.close()

        answers, state = await threads.deferToThread(served_then_idle)
        self.assertEqual(answers, [200, 200])
        self.assertEqual(state, "closed")


class EarlyBodyRefusalTests(ServerTestCase):
    """
    A body is judged from the headers and the caller's certificate before
    any of it is read: the client sends only the headers of a large body
    and still gets its answer (a server that waited for the body would not
    answer before the client timed out).
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")

    async def early(self, certificate, method, path, status, message, length=MAX_DB_BODY, headers=()):
        response = await self.raw(certificate).request(
            method, path, None, headers=headers, content_length=length, send_body=b""
        )
        self.assertError(response, status, message)
        self.assertEqual(response.header("connection"), "close")
        await self.assertStillServing()

    async def test_restore_without_certificate(self):
        await self.early(None, "PUT", "/v1/db", 403, PERMISSION)

    async def test_restore_by_other_identity(self):
        await self.early(generate_api_key(), "PUT", "/v1/db", 403, PERMISSION)

    async def test_restore_too_large(self):
        await self.early(
            "sysadmin",
            "PUT",
            "/v1/db",
            413,
            f"request body too large: limit is {MAX_DB_BODY} bytes",
            length=MAX_DB_BODY + 1,
        )

    async def test_kms_without_certificate(self):
        await self.early(None, "POST", "/v1/kms/e1", 403, PERMISSION, length=MAX_BODY)

    async def test_kms_by_unknown_identity(self):
        await self.early(generate_api_key(), "POST", "/v1/kms/e1", 403, PERMISSION, length=MAX_BODY)

    async def test_cluster_path_by_enclave_identity(self):
        """An identity of e1 may not call C{/v1/kms} (the SysAdmin's path)."""
        user = generate_api_key()
        await self.identity("e1", "Admin", api_key=user)
        await self.early(user, "POST", "/v1/kms", 403, PERMISSION, length=MAX_BODY)

    async def test_debug_without_certificate(self):
        await self.early(None, "POST", "/v1/debug/log", 403, PERMISSION, length=MAX_BODY)

    async def test_chunked_without_certificate(self):
        port, context = self.server.port, self.raw(None).context

        def exchange():
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                with context.wrap_socket(sock) as tls:
                    tls.sendall(b"PUT /v1/db HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                    response = http.client.HTTPResponse(tls, method="PUT")
                    response.begin()
                    return response.status, response.read()

        status, body = await threads.deferToThread(exchange)
        self.assertEqual((status, body), (403, b'{"message":"%s"}' % PERMISSION.encode()))

    async def test_refused_client_that_keeps_sending_is_cut(self):
        """
        A refused client that neither reads the answer nor closes, but keeps
        sending its body, is cut off soon after the refusal.
        """
        port, context = self.server.port, self.raw(None).context

        def keep_sending():
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                with context.wrap_socket(sock) as tls:
                    tls.sendall(b"PUT /v1/db HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % MAX_DB_BODY)
                    deadline = time.monotonic() + CLOSE_DEADLINE
                    while time.monotonic() < deadline:
                        try:
                            tls.sendall(b"\x00" * 1024)
                        except OSError:
                            return True
                        time.sleep(0.05)
                    return False

        self.assertTrue(await threads.deferToThread(keep_sending), "the refused connection stayed open")
        await self.assertStillServing()

    async def test_sysadmin_restore_body_is_read(self):
        """The SysAdmin's body is read and judged (here: not a backup)."""
        response = await self.raw().request("PUT", "/v1/db", b"not a backup")
        self.assertEqual(response.status, 400, response)


class AuthenticationFirstTests(ServerTestCase):
    """
    Spec 7.2: authenticate, then authorize, then judge the request.  A
    caller without a certificate or with an identity the enclave does not
    know gets 403 for a bad enclave name, a malformed frame or a cluster
    command sent to an enclave, where the SysAdmin gets 400.
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")

    CASES = (
        ("/v1/kms/a%2Fb", body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k"))),
        ("/v1/kms/" + "x" * 81, body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k"))),
        ("/v1/kms/e1", unhex("00 cc 00 00")),
        ("/v1/kms/e1", frame(CLUSTER_STATUS)),
        ("/v1/kms/e1/extra", frame(KEY_STATUS)),
        ("/v1/kms", unhex("ff ff 00 00 00 00")),
    )

    async def check(self, certificate):
        for path, body in self.CASES:
            response = await self.raw(certificate).kms(body, path=path)
            self.assertError(response, 403, PERMISSION)
            sysadmin = await self.raw().kms(body, path=path)
            self.assertEqual(sysadmin.status, 400, (path, sysadmin))

    async def test_without_certificate(self):
        await self.check(None)

    async def test_unknown_identity(self):
        await self.check(generate_api_key())

    async def test_cluster_command_by_enclave_admin(self):
        admin = generate_api_key()
        await self.identity("e1", "Admin", api_key=admin)
        response = await self.raw(admin).kms(frame(CLUSTER_STATUS), "e1")
        self.assertError(response, 403, PERMISSION)


class CipherSuiteTests(ServerTestCase):
    """TLS 1.2 offers only ECDHE with AEAD; TLS 1.3 is untouched."""

    def handshake(self, ciphers: str | None, version):
        port = self.server.port

        def connect():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.minimum_version = context.maximum_version = version
            if ciphers:
                context.set_ciphers(ciphers)
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                with context.wrap_socket(sock) as tls:
                    return tls.cipher()[0]

        return threads.deferToThread(connect)

    async def test_cbc_refused(self):
        for suite in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"):
            with self.assertRaises(ssl.SSLError, msg=suite):
                await self.handshake(suite, ssl.TLSVersion.TLSv1_2)

    async def test_aead_accepted(self):
        for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
            self.assertEqual(await self.handshake(suite, ssl.TLSVersion.TLSv1_2), suite)

    async def test_tls13(self):
        self.assertTrue((await self.handshake(None, ssl.TLSVersion.TLSv1_3)).startswith("TLS_"))


def _listen_backlog(port: int) -> int:
    """The kernel's accept queue length of the socket listening on C{port} (C{ss})."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout.split()
    return int(out[2])


def _somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


class BacklogTests(LimitedServerCase):
    """The listen backlog is a setting (the kernel caps it at somaxconn)."""

    limits = "  listen_backlog: 300\n"
    skip = None if shutil.which("ss") else "needs ss (iproute2) to read the listen backlog"

    def test_configured(self):
        self.assertEqual(_listen_backlog(self.server.port), min(300, _somaxconn()))


class DefaultBacklogTests(ServerTestCase):
    skip = BacklogTests.skip

    def test_default_well_above_twisted(self):
        self.assertEqual(_listen_backlog(self.server.port), min(1024, _somaxconn()))


class ProcessHygieneTests(unittest.TestCase):
    """
    A running server process holds its HSM key only in memory: not in
    C{/proc/PID/environ} (under either spelling), and it cannot dump core.
    """

    timeout = 120

    async def test_hsm_key_dropped_and_no_core(self):
        hsm = SoftHSM.generate()
        key = hsm.to_text()
        node = ProcessNode(self, hsm, environ={"MINIO_KMS_HSM_KEY": key, "MINIO_HSM_KMS_KEY": key})
        node.start()
        client = KMSClient(reactor, [node.host], APIKey.parse(hsm.sysadmin_api_key()), insecure=True)
        self.addCleanup(client.close)
        await node.wait_up(client)
        pid = node.process.pid
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
        self.assertNotIn(key.encode(), environ)
        self.assertNotIn(key.split(":")[-1].encode(), environ)
        self.assertNotIn(b"MINIO_KMS_HSM_KEY=", environ)
        self.assertNotIn(b"MINIO_HSM_KMS_KEY=", environ)
        with open(f"/proc/{pid}/limits") as f:
            core = [line for line in f if line.startswith("Max core file size")]
        self.assertEqual(core[0].split()[4:6], ["0", "0"], core)

    def test_systemd_unit_forbids_core_dumps(self):
        import os

        from tests.support import REPO

        with open(os.path.join(REPO, "conf", "minkms.service")) as f:
            self.assertIn("LimitCORE=0", f.read().splitlines())

    def test_example_config_loads(self):
        """conf/config.yaml, with its limits example uncommented, is a valid config."""
        import os

        from minkms.server import config as cfg
        from tests.support import REPO, write_server_certificate

        with open(os.path.join(REPO, "conf", "config.yaml")) as f:
            text = f.read()
        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "CAs"))
        key, cert = write_server_certificate(directory)
        text = text.replace("/etc/minkms/certs/private.key", key).replace("/etc/minkms/certs/public.crt", cert)
        text = text.replace("/etc/minkms/certs/CAs", os.path.join(directory, "CAs"))
        start = text.index("# limits:")
        text = text[:start] + "\n".join(line[2:] for line in text[start:].splitlines()) + "\n"
        path = os.path.join(directory, "config.yaml")
        with open(path, "w") as f:
            f.write(text)
        self.assertEqual(cfg.load_config(path).limits, ConnectionLimits())


def _few_descriptors():
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))


async def _sysadmin_status(testcase, port, api_key, attempts=5):
    """
    The SysAdmin's status request, retried on a reset connection as a
    client does: a flood accepted from the backlog after the SysAdmin's
    connection may evict it from the reserve (docs/network-limits.md).
    """
    for attempt in range(attempts):
        try:
            return await RawClient(testcase, port, api_key, timeout=60).kms(frame(CLUSTER_STATUS))
        except (ConnectionError, ssl.SSLError):
            if attempt == attempts - 1:
                raise
            await task.deferLater(reactor, 1.0, lambda: None)


class DescriptorExhaustionTests(unittest.TestCase):
    """
    The issue's attack: 600 idle connections against a node allowed 512
    open files.  The caps fit the descriptors, so the SysAdmin and a peer
    are still served, and the idle connections are closed.
    """

    timeout = 180

    async def test_600_idle_connections(self):
        hsm = SoftHSM.generate()
        node = ProcessNode(self, hsm, preexec_fn=_few_descriptors)
        node.start()
        api_key = APIKey.parse(hsm.sysadmin_api_key())
        client = KMSClient(reactor, [node.host], api_key, insecure=True)
        self.addCleanup(client.close)
        await node.wait_up(client)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", node.port, timeout=60)
        idle = []
        for _ in range(600):
            protocol = await endpoint.connect(Factory.forProtocol(IdleClient))
            protocol.handshake.addErrback(lambda _: None)
            self.addCleanup(protocol.close)
            idle.append(protocol)
        response = await _sysadmin_status(self, node.port, api_key)
        self.assertEqual(response.status, 200, response)
        link = peer.PeerLink(reactor, node.host, None, peer.peer_tls(hsm), APIKey.parse(hsm.peer_api_key()).identity)
        try:
            answer = await link.call(peer.NodeStatus, 60, reactor)
        finally:
            link.close()
        self.assertEqual(pb.ServerStatusResponse.FromString(answer["status"]).Host, node.host)
        try:
            await defer.gatherResults([p.lost for p in idle]).addTimeout(120, reactor)
        except defer.TimeoutError:
            self.fail(f"{sum(not p.lost.called for p in idle)} idle connections were kept open")


class ConnectionTableTests(unittest.TestCase):
    """The admission rules of L{ConnectionTable}, without sockets."""

    def setUp(self):
        self.table = ConnectionTable(
            ConnectionLimits(max_connections=4, max_connections_per_address=2, reserved_connections=2)
        )

    def test_per_address_then_reserve(self):
        self.assertEqual([self.table.admit(n, "a")[0] for n in ("a1", "a2")], [NORMAL, NORMAL])
        self.assertEqual(self.table.admit("b1", "b"), (NORMAL, None))
        self.assertEqual(self.table.admit("a3", "a"), (PROBATION, None))
        self.assertFalse(self.table.identified("a3", privileged=False))
        self.assertTrue(self.table.identified("a1", privileged=False), "within the caps anyone stays")

    def test_oldest_on_probation_evicted(self):
        for name in ("x1", "x2", "x3", "x4"):
            self.table.admit(name, name)
        self.assertEqual(self.table.admit("s1", "s"), (PROBATION, None))
        self.assertEqual(self.table.admit("s2", "s"), (PROBATION, None))
        self.assertEqual(self.table.admit("admin", "s"), (PROBATION, "s1"))
        self.assertTrue(self.table.identified("admin", privileged=True))
        self.table.release("s1", "s")
        self.assertEqual(self.table.total, 6)

    def test_release_frees_a_slot(self):
        self.table.admit("a1", "a")
        self.table.admit("a2", "a")
        self.table.release("a1", "a")
        self.assertEqual(self.table.admit("a3", "a"), (NORMAL, None))

    def test_no_reserve_refuses(self):
        table = ConnectionTable(ConnectionLimits(max_connections=1, reserved_connections=0))
        table.admit("a", "a")
        self.assertEqual(table.admit("b", "b"), (REFUSED, None))
