"""
Certificate reload and the log stream, on a real node over real TLS.

A certificate rotated on disk is served to new connections while an open
connection keeps working; a bad file keeps the current certificate and
says why in the log, which a SysAdmin follows with C{POST /v1/debug/log}
(and C{minkms logs}) filtered by level.
"""

import os
import signal
import socket
import ssl
import subprocess
import sys
import time

from twisted.internet import reactor, threads
from twisted.trial import unittest

from minkms.errors import ErrPermission, KMSError
from minkms.server.logstream import LogFilter
from minkms.wire import kms_pb2 as pb
from minkms.wire.logrec import decode_log_records
from tests.harness import InProcessServer, until, write_config
from tests.support import REPO, cli_env, stop_process, write_server_certificate


def _tls_socket(port: int) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    return context.wrap_socket(sock, server_hostname="localhost")


def _get_version(sock: ssl.SSLSocket) -> bytes:
    sock.sendall(b"GET /version HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0]


def _served_certificate(port: int) -> bytes:
    with _tls_socket(port) as sock:
        return sock.getpeercert(binary_form=True)


class ReloadTestCase(unittest.TestCase):
    timeout = 120

    async def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        config = write_config(self.directory)
        self.server = InProcessServer(self, extra_args=["--config", config])
        await self.server.wait_ready()

    def refused_reload(self) -> bool:
        """Whether the node has logged that a reload failed and it kept its certificates."""
        return any("not reloaded" in record.message for record in self.server.service.ops.logs.recent)

    def rotate(self):
        """Write a new key and certificate over the configured ones."""
        fresh = os.path.join(self.directory, "fresh")
        os.makedirs(fresh, exist_ok=True)
        key, cert = write_server_certificate(fresh)
        for source, name in ((key, "private.key"), (cert, "public.crt")):
            os.replace(source, os.path.join(self.directory, name))
        with open(os.path.join(self.directory, "public.crt"), "rb") as f:
            return ssl.PEM_cert_to_DER_cert(f.read().decode("ascii"))


class CertificateReloadTests(ReloadTestCase):
    async def test_rotated_certificate_is_served_and_old_connection_survives(self):
        port = self.server.port
        old = await threads.deferToThread(_tls_socket, port)
        self.addCleanup(old.close)
        old_cert = old.getpeercert(binary_form=True)
        self.assertEqual(await threads.deferToThread(_get_version, old), b"HTTP/1.1 200 OK")
        new_cert = self.rotate()
        self.assertNotEqual(new_cert, old_cert)

        async def new_one_served():
            return await threads.deferToThread(_served_certificate, port) == new_cert

        await until(new_one_served, "the rotated certificate on a new connection")
        self.assertEqual(await threads.deferToThread(_get_version, old), b"HTTP/1.1 200 OK")
        self.assertEqual(old.getpeercert(binary_form=True), old_cert)

    async def test_bad_file_keeps_the_current_certificate(self):
        port = self.server.port
        current = await threads.deferToThread(_served_certificate, port)
        with open(os.path.join(self.directory, "public.crt"), "w") as f:
            f.write("not a certificate\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await until(self.refused_reload, "the refused reload")
        self.assertEqual(await threads.deferToThread(_served_certificate, port), current)


class LogStreamTests(ReloadTestCase):
    async def test_stream_filtered_by_level(self):
        client = self.server.client()
        self.addCleanup(client.close)
        seen = []
        pending = [b""]

        def deliver(data):
            records, pending[0] = decode_log_records(pending[0] + data)
            seen.extend(records)

        request = pb.LogRequest(Level=4)  # WARN and above
        stream = client.stream(b"POST", "/v1/debug/log", request.SerializeToString(), deliver)
        from twisted.internet import defer

        d = defer.ensureDeferred(stream)
        await until(lambda: self.server.service.ops.logs.subscribers, "the stream to connect")
        self.rotate()
        os.kill(os.getpid(), signal.SIGHUP)  # a good reload: INFO, filtered out
        await until(lambda: defer.succeed(self.server.service.ops.reloader is not None), "reloader")
        with open(os.path.join(self.directory, "public.crt"), "w") as f:
            f.write("garbage\n")
        os.kill(os.getpid(), signal.SIGHUP)  # a bad one: WARN

        async def warned():
            return [r for r in seen if "not reloaded" in r.Message]

        [record, *_] = await until(warned, "the warning on the stream")
        self.assertEqual(record.Level, 4)
        self.assertIn("invalid certificate", record.Message)
        self.assertEqual(record.Request.IP, "127.0.0.1")  # older kms-go clients need it
        self.assertFalse([r for r in seen if r.Level < 4])
        d.cancel()
        await d.addErrback(lambda _: None)

    async def test_since_replays_earlier_records(self):
        with open(os.path.join(self.directory, "public.crt"), "w") as f:
            f.write("garbage\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await until(self.refused_reload, "the refused reload")
        client = self.server.client()
        self.addCleanup(client.close)
        seen, pending = [], [b""]

        def deliver(data):
            records, pending[0] = decode_log_records(pending[0] + data)
            seen.extend(records)

        request = pb.LogRequest(Level=4, Message="not reloaded")
        request.Since.FromSeconds(int(time.time()) - 60)
        from twisted.internet import defer

        d = defer.ensureDeferred(client.stream(b"POST", "/v1/debug/log", request.SerializeToString(), deliver))
        await until(lambda: defer.succeed(seen), "the replayed warning")
        self.assertIn("not reloaded", seen[0].Message)
        d.cancel()
        await d.addErrback(lambda _: None)

    async def test_only_the_sysadmin_streams(self):
        client = self.server.client(None)
        self.addCleanup(client.close)
        with self.assertRaises(KMSError) as refused:
            await client.stream(b"POST", "/v1/debug/log", b"", lambda data: None)
        self.assertEqual(refused.exception, ErrPermission)

    async def test_minkms_logs_follows(self):
        env = cli_env(MINIO_KMS_API_KEY=self.server.api_key.text)
        process = subprocess.Popen(
            [sys.executable, "-m", "minkms.cli.main", "logs", self.server.host, "-k", "--level", "warn"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
            text=True,
        )
        self.addCleanup(stop_process, process)
        line = threads.deferToThread(process.stdout.readline)

        async def subscribed():
            return bool(self.server.service.ops.logs.subscribers)

        await until(subscribed, "minkms logs to connect")
        with open(os.path.join(self.directory, "public.crt"), "w") as f:
            f.write("garbage\n")
        os.kill(os.getpid(), signal.SIGHUP)
        text = await line
        self.assertIn(" WARN TLS certificates not reloaded", text)


class LogRequestTests(unittest.TestCase):
    """Spec section 11: older clients put TraceLevel in field 8 and strings in 4-7."""

    def test_current_layout(self):
        body = pb.LogRequest(Level=-4, Message="boom", TraceLevel=8).SerializeToString()
        wanted = LogFilter.parse(body, time.time())
        self.assertEqual((wanted.level, wanted.message, wanted.trace_level), (-4, "boom", 8))

    def test_older_layout(self):
        body = (
            pb.LogRequest(Level=4).SerializeToString() + b"\x22\x04POST" + b"\x2a\x07/v1/kms" + b"\x40\x10"
        )  # 4: method, 5: path, 8: zigzag(8)
        wanted = LogFilter.parse(body, time.time())
        self.assertEqual((wanted.level, wanted.trace_level), (4, 8))

    def test_go_zero_since_means_new_records_only(self):
        request = pb.LogRequest()
        request.Since.seconds = -62135596800
        self.assertIsNone(LogFilter.parse(request.SerializeToString(), time.time()).since)


class LogFormatTests(unittest.TestCase):
    timeout = 120

    async def test_json_lines(self):
        import json

        from minkms.hsm import SoftHSM
        from tests.harness import ProcessNode

        node = ProcessNode(self, SoftHSM.generate(), extra_args=["--log-format", "json"]).start()
        from minkms.client import KMSClient

        client = KMSClient(reactor, [node.host], None, insecure=True)
        self.addCleanup(client.close)
        await node.wait_up(client)
        node.stop()
        lines = [line for line in node.log().splitlines() if line.startswith("{")]
        self.assertTrue(lines, node.log())
        for line in lines:
            record = json.loads(line)
            self.assertEqual(set(record), {"time", "level", "namespace", "message"})
