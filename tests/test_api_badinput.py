"""
Bad input over the wire, one test each: the node answers with the status
and message a client can act on, and keeps serving others afterwards (a
follow-up request on a new connection succeeds).
"""

import socket

from twisted.internet import threads

from minkms.apikey import generate_api_key
from minkms.errors import ErrPermission
from minkms.server.http import MAX_BODY
from minkms.wire import kms_pb2 as pb
from tests.test_conformance import (
    CLUSTER_STATUS,
    ENCLAVE_CREATE,
    ENCLAVE_LIST,
    KEY_CREATE,
    KEY_ENCRYPT,
    KEY_STATUS,
    POLICY_CREATE,
    ServerTestCase,
    body_of,
    frame,
    unhex,
)

TEN_MIB = 10 * 1024 * 1024
PERMISSION = ErrPermission.message


class BadInputTests(ServerTestCase):
    """
    Malformed frames, bodies, paths and names are refused with 400 (413
    for oversized bodies, 403 for callers without rights), each with a
    message naming the problem; the node stays up.
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")

    async def refused(self, body, status, message, enclave="e1", certificate="sysadmin", path=None):
        response = await self.raw(certificate).kms(body, enclave, path=path)
        self.assertError(response, status, message)
        await self.assertStillServing()
        return response

    async def test_truncated_frame(self):
        await self.refused(
            unhex("00 cc 00 00"),
            400,
            "truncated command frame 1: 4 bytes left, a frame header needs 6",
        )

    async def test_truncated_second_frame(self):
        await self.refused(
            body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k")) + unhex("00 cc 00"),
            400,
            "truncated command frame 2: 3 bytes left, a frame header needs 6",
        )

    async def test_length_beyond_body(self):
        await self.refused(
            unhex("00 cc 00 00 00 10 0a 02 6b 31"),
            400,
            "truncated command frame 1: length 16 exceeds the 4 bytes left in the body",
        )

    async def test_empty_body(self):
        await self.refused(b"", 400, "empty request body: expected at least one command frame")

    async def test_unknown_command_code(self):
        for code in (0, 7, 100, 211, 0xFFFF):
            await self.refused(frame(code), 400, f"unknown command code {code}")

    async def test_invalid_protobuf(self):
        # field 1 (Name) announces 5 bytes, none follow
        await self.refused(
            frame(KEY_STATUS, unhex("0a 05")),
            400,
            "invalid KEY:STATUS message in frame 1: not a valid KeyStatusRequest",
        )

    async def test_mixed_codes(self):
        body = body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k1")) + frame(KEY_ENCRYPT, unhex("0a 02 6b 31"))
        await self.refused(body, 400, "mixed commands in one request: frame 2 is KEY:ENCRYPT, frame 1 is KEY:STATUS")

    async def test_batched_write(self):
        body = body_of(KEY_CREATE, pb.CreateKeyRequest(Name="a"), pb.CreateKeyRequest(Name="b"))
        await self.refused(body, 400, "KEY:CREATE takes exactly one command frame, not a batch")

    async def test_cluster_command_with_enclave(self):
        await self.refused(
            frame(CLUSTER_STATUS),
            400,
            "CLUSTER:STATUS is a cluster command: send it without an enclave",
        )
        await self.refused(
            body_of(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e2")),
            400,
            "ENCLAVE:CREATE is a cluster command: send it without an enclave",
        )
        await self.refused(
            body_of(ENCLAVE_LIST, pb.ListRequest()),
            400,
            "ENCLAVE:LIST is a cluster command: send it without an enclave",
        )

    async def test_enclave_command_without_enclave(self):
        for path in ("/v1/kms", "/v1/kms/"):
            await self.refused(
                body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k")),
                400,
                "KEY:STATUS needs an enclave: send it to /v1/kms/ENCLAVE",
                path=path,
            )
            await self.refused(
                body_of(KEY_CREATE, pb.CreateKeyRequest(Name="k")),
                400,
                "KEY:CREATE needs an enclave: send it to /v1/kms/ENCLAVE",
                path=path,
            )

    async def test_ten_mib_body(self):
        """
        Content-Length 10 MiB: 413 arrives although only 64 KiB of the body
        were sent, so the server did not wait for (or buffer) the rest.
        """
        response = await self.raw().kms(None, "e1", content_length=TEN_MIB, send_body=b"\x00" * 65536)
        self.assertError(response, 413, f"request body too large: limit is {MAX_BODY} bytes")
        self.assertEqual(response.header("connection"), "close")
        await self.assertStillServing()

    async def test_body_at_limit_is_read(self):
        """A body of exactly 1 MiB is read (and judged on its frames)."""
        payload = b"\x00" * (MAX_BODY - 6)
        response = await self.raw().kms(frame(KEY_STATUS, payload), "e1")
        self.assertError(response, 400, "invalid KEY:STATUS message in frame 1: not a valid KeyStatusRequest")
        await self.assertStillServing()

    async def test_ten_mib_body_slow_client(self):
        """
        The 413 is sent as soon as the headers are in, even to a client that
        waits for an answer before sending any of its body; it says
        C{Connection: close} and the server then closes the connection.
        """
        port = self.server.port
        context = self.raw().context

        def exchange():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                with context.wrap_socket(sock) as tls:
                    tls.sendall(
                        b"POST /v1/kms/e1 HTTP/1.1\r\nHost: x\r\nAccept: application/*\r\n"
                        b"Content-Type: application/octet-stream\r\n"
                        b"Content-Length: %d\r\n\r\n" % TEN_MIB
                    )
                    data = b""
                    while True:
                        try:
                            chunk = tls.recv(65536)
                        except TimeoutError:
                            return data, False
                        except OSError:
                            return data, True
                        if not chunk:
                            return data, True
                        data += chunk

        data, closed = await threads.deferToThread(exchange)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)
        self.assertIn(b"\r\nConnection: close", head)
        self.assertEqual(body, b'{"message":"request body too large: limit is 1048576 bytes"}')
        self.assertTrue(closed, "the server announced Connection: close but kept the connection open")
        await self.assertStillServing()

    async def test_enclave_name_with_encoded_slash(self):
        """C{/v1/kms/a%2Fb} names the enclave "a/b", which is not a valid name."""
        await self.refused(
            body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k")),
            400,
            "invalid enclave name: contains '/' at position 2",
            path="/v1/kms/a%2Fb",
        )

    async def test_enclave_path_with_slash(self):
        await self.refused(
            body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k")),
            400,
            "invalid enclave name: must not contain '/'",
            path="/v1/kms/e1/k",
        )

    async def test_names_with_slash(self):
        await self.refused(
            body_of(KEY_CREATE, pb.CreateKeyRequest(Name="a/b")),
            400,
            "invalid key name: contains '/' at position 2",
        )
        await self.refused(
            body_of(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="a/b")),
            400,
            "invalid enclave name: contains '/' at position 2",
            enclave="",
        )
        await self.refused(
            body_of(POLICY_CREATE, pb.CreatePolicyRequest(Name="/p")),
            400,
            "invalid policy name: contains '/' at position 1",
        )

    async def test_empty_names(self):
        await self.refused(body_of(KEY_CREATE, pb.CreateKeyRequest(Name="")), 400, "invalid key name: empty")
        await self.refused(
            body_of(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="")),
            400,
            "invalid enclave name: empty",
            enclave="",
        )
        await self.refused(body_of(POLICY_CREATE, pb.CreatePolicyRequest(Name="")), 400, "invalid policy name: empty")

    async def test_over_long_names(self):
        long = "n" * 81
        await self.refused(
            body_of(KEY_CREATE, pb.CreateKeyRequest(Name=long)),
            400,
            "invalid key name: longer than 80 characters",
        )
        await self.refused(
            body_of(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=long)),
            400,
            "invalid enclave name: longer than 80 characters",
            enclave="",
        )
        await self.refused(
            body_of(POLICY_CREATE, pb.CreatePolicyRequest(Name=long)),
            400,
            "invalid policy name: longer than 80 characters",
        )
        await self.key("n" * 80)
        [status] = await self.send(KEY_STATUS, [pb.KeyStatusRequest(Name="n" * 80)], "e1")
        self.assertEqual(status.Version, 1)

    async def test_no_client_certificate(self):
        await self.refused(frame(CLUSTER_STATUS), 403, PERMISSION, enclave="", certificate=None)
        await self.refused(body_of(KEY_CREATE, pb.CreateKeyRequest(Name="k")), 403, PERMISSION, certificate=None)

    async def test_unknown_identity(self):
        stranger = generate_api_key()
        await self.refused(frame(CLUSTER_STATUS), 403, PERMISSION, enclave="", certificate=stranger)
        await self.refused(body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k")), 403, PERMISSION, certificate=stranger)
        await self.refused(
            body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k")),
            403,
            PERMISSION,
            enclave="missing",
            certificate=stranger,
        )

    async def test_garbage_instead_of_tls(self):
        """Plain HTTP (or noise) on the TLS port is dropped; TLS clients still served."""

        def plaintext():
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as sock:
                sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    return sock.recv(65536)
                except OSError:
                    return b""

        await threads.deferToThread(plaintext)
        await self.assertStillServing()


class NotYetEndpointTests(ServerTestCase):
    """Endpoints of the protocol this build lacks answer 501 with a reason, not 404."""

    async def test_not_yet(self):
        for method, path in ((b"POST", "/v1/debug/restart?self"),):
            status, ctype, body = await self.root.request(method, path, b"" if method == b"POST" else None)
            self.assertEqual(status, 501, path)
            self.assertEqual(ctype, b"application/json")
            self.assertIn(b"is not supported by this server yet", body)
