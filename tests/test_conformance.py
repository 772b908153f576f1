"""
Conformance with the kms-go client contract: spec section 12, items 1-16
and 21, in order, against a real node (L{InProcessServer}) over real TLS on
loopback.

Two clients drive the node:

  - L{KMSClient}, which builds frames and reads errors exactly as kms-go
    does (spec sections 4 and 7.1);
  - L{RawClient}, HTTP/1.1 written by hand over the stdlib C{ssl} module in
    a thread: bytes exactly as given (the spec's hex examples), every
    response header visible, TLS version and session resumption under the
    test's control.  It is a second, independent TLS stack.

The helpers at the top are shared with C{tests.test_api_badinput}.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import struct
import time
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import threads
from twisted.trial import unittest

from minkms.apikey import APIKey, generate_api_key
from minkms.errors import (
    ErrDecrypt,
    ErrEnclaveExists,
    ErrEnclaveNotFound,
    ErrIdentityNotFound,
    ErrKeyExists,
    ErrKeyNotFound,
    ErrPermission,
    ErrPolicyNotFound,
    KMSError,
)
from minkms.wire import frames, kms_pb2 as pb
from tests.harness import InProcessServer
from tests.support import read_tsv

# --- command codes (spec section 4.5) ----------------------------------------
# Written out as kms-go numbers them, not imported from minkms.wire.commands:
# a wrong code in the server's table must fail this conformance run.

CLUSTER_STATUS = 3
ENCLAVE_CREATE, ENCLAVE_DELETE, ENCLAVE_STATUS, ENCLAVE_LIST = 101, 102, 103, 104
KEY_CREATE, KEY_DELETE, KEY_IMPORT, KEY_STATUS = 201, 202, 203, 204
KEY_ENCRYPT, KEY_DECRYPT, KEY_GENERATE, KEY_LIST, KEY_MAC = 205, 206, 207, 208, 210
POLICY_CREATE, POLICY_DELETE, POLICY_ASSIGN = 301, 302, 303
POLICY_GET, POLICY_STATUS, POLICY_LIST = 304, 305, 306
IDENTITY_CREATE, IDENTITY_DELETE, IDENTITY_STATUS, IDENTITY_LIST = 401, 402, 403, 404

PRIV_SYSADMIN, PRIV_ADMIN, PRIV_USER = 1, 2, 3

VERSION_KEYS = {"version", "commit", "api_version", "host", "fips140"}
VERSION_FORMAT = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ\Z")

# Spec section 1.5: API keys and the identities a server must compute.
SPEC_IDENTITY_VECTORS = [
    ("k1:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E", "h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw"),
    ("k1:AqwjUvaWEE9O83quGOkiO_2D1x37Za9gE4L5UHdq0Ag", "h1:FALvKoL5sB2mfvXrbheZ8tgKjIJZ60gN-VH9TcfK7Q0"),
    ("k1:xZnpcYtPdVMNLBBRaUO5HPEoK_jVrcc3MWR8BshkjJw", "h1:l4AoVm6xKAVGsfo8J_ttCOC6Odgq3GJLHg5NtAdOAr0"),
    ("k2:q0B1BZ069Sk3-pBun983nLbQUOSR_j0ltnkfG4nPrE0", "h1:i0ivgFv_k3pPT4sB5_gkwoWdcSHz060kQ47wNfKCzog"),
    (
        "k2:CaJIp1tfO7US1bMkRP1LzVzMV8v4IK5oBW1bhuvJFpFOPtbsJf3a3vViu5uGSas6",
        "h1:UnOB_LeUMAcsLwHK0ufq_5ZIlcqO8sIBPrXiFGc_BLY",
    ),
    (
        "k2:AT7JYw3tnjgYhqplUPiJbITqAdgo4IuDf9talnHivzMeoEsVR60Vidpl93zAdweZApsStCEpHVPtwGAD2UoGI0o0",
        "h1:J19yvEsR7rCj35ujui4hESeXgWQovzpqzzVKb0BUOlc",
    ),
]
K1_VECTOR = SPEC_IDENTITY_VECTORS[0]
K2_P256_VECTOR = SPEC_IDENTITY_VECTORS[3]


# --- helpers -----------------------------------------------------------------


def unhex(text: str) -> bytes:
    """Bytes from the spec's spaced hex (C{"00 03 00 00 00 00"})."""
    return bytes.fromhex(text.replace(" ", ""))


def frame(code: int, payload: bytes = b"") -> bytes:
    """One command frame: u16 BE code, u32 BE length, payload."""
    return struct.pack(">HI", code, len(payload)) + payload


def body_of(code: int, *messages) -> bytes:
    """A request body of one frame per protobuf message, built by hand."""
    return b"".join(frame(code, m.SerializeToString()) for m in messages)


def spki_identity(certificate: x509.Certificate) -> str:
    """Spec 1.5, computed here independently of L{minkms.apikey}."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(spki).digest()
    return "h1:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def write_client_pem(directory: str, certificates, private_key) -> tuple[str, str]:
    """Write a client certificate chain and key as PEM; return their paths."""
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, "client.crt")
    key_path = os.path.join(directory, "client.key")
    with open(cert_path, "wb") as f:
        for cert in certificates:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class RawResponse:
    """One HTTP response as read off the wire by L{RawClient}."""

    def __init__(self, status, headers, body, tls_version, session, session_reused, alpn):
        self.status = status
        self.headers = headers
        self.body = body
        self.tls_version = tls_version
        self.session = session
        self.session_reused = session_reused
        self.alpn = alpn

    def header(self, name: str):
        """The value of header C{name} (case-insensitive), or None."""
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"RawResponse({self.status}, {self.headers!r}, {self.body[:200]!r})"


class RawClient:
    """
    HTTP/1.1 over the stdlib C{ssl} module, one connection per request,
    run in a thread so that the in-process server keeps serving.  Sends the
    headers Go's transport sends (C{Accept-Encoding: gzip}, a Go
    C{User-Agent}, ALPN C{h2} and C{http/1.1}).

    @param certificate: C{None} (no client certificate), an API key (text
        or L{APIKey}), or C{(certificates, private_key)} for any X.509 chain.
    """

    def __init__(
        self, testcase, port: int, certificate=None, tls_version=None, alpn=("h2", "http/1.1"), timeout: float = 10.0
    ):
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.timeout = timeout
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls_version is not None:
            ctx.minimum_version = tls_version
            ctx.maximum_version = tls_version
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if certificate is not None:
            if isinstance(certificate, (str, APIKey)):
                key = APIKey.parse(certificate) if isinstance(certificate, str) else certificate
                chain, private_key = [key.certificate()], key.private_key
            else:
                chain, private_key = certificate
            cert_path, key_path = write_client_pem(testcase.mktemp(), chain, private_key)
            ctx.load_cert_chain(cert_path, key_path)
        self.context = ctx

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers=(),
        session=None,
        accept="application/*",
        send_body: bytes | None = None,
        content_length: int | None = None,
    ):
        """
        A Deferred L{RawResponse}.

        @param send_body: bytes actually sent after the headers, when they
            differ from C{body} (a body cut short); C{content_length} then
            gives the announced length.
        """
        return threads.deferToThread(
            self._exchange,
            method,
            path,
            body,
            list(headers),
            session,
            accept,
            send_body,
            content_length,
        )

    def kms(self, body: bytes, enclave: str | None = None, path: str | None = None, **kw):
        """C{POST /v1/kms[/enclave]} with a raw framed body."""
        if path is None:
            path = "/v1/kms" if not enclave else "/v1/kms/" + quote(enclave, safe="")
        return self.request("POST", path, body, **kw)

    def _exchange(self, method, path, body, headers, session, accept, send_body, content_length):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        try:
            tls = self.context.wrap_socket(sock, session=session)
            lines = [
                f"{method} {path} HTTP/1.1",
                f"Host: {self.host}",
                "User-Agent: Go-http-client/1.1",
                "Accept-Encoding: gzip",
            ]
            if accept is not None:
                lines.append(f"Accept: {accept}")
            if body is not None or content_length is not None:
                lines.append("Content-Type: application/octet-stream")
                length = content_length if content_length is not None else len(body)
                lines.append(f"Content-Length: {length}")
            lines.extend(f"{k}: {v}" for k, v in headers)
            data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            tls.sendall(data)
            payload = send_body if send_body is not None else body
            if payload:
                try:
                    tls.sendall(payload)
                except OSError:
                    pass  # the server may refuse the rest of a body it will not read
            response = http.client.HTTPResponse(tls, method=method)
            response.begin()
            got_headers = [(k.lower(), v) for k, v in response.getheaders()]
            if response.length is None and not response.chunked:
                chunks = []
                try:
                    while True:
                        chunk = response.fp.read1(65536) if response.fp else b""
                        if not chunk:
                            break
                        chunks.append(chunk)
                except (TimeoutError, OSError):
                    pass
                data = b"".join(chunks)
            else:
                data = response.read()
            return RawResponse(
                response.status,
                got_headers,
                data,
                tls.version(),
                tls.session,
                tls.session_reused,
                tls.selected_alpn_protocol(),
            )
        finally:
            sock.close()


def decode_frames(code: int, body: bytes) -> list:
    """Response frames decoded as kms-go does (L{frames.decode_response})."""
    return frames.decode_response(code, body)


class ServerTestCase(unittest.TestCase):
    """A fresh single node per test, ready for writes."""

    timeout = 60

    async def setUp(self):
        self.server = InProcessServer(self)
        await self.server.wait_ready()
        self.root = self.client()
        self.root_identity = self.server.api_key.identity

    def client(self, api_key="sysadmin"):
        """A L{KMSClient} whose connections are closed at cleanup."""
        client = self.server.client(api_key)
        self.addCleanup(client.close)
        return client

    def raw(self, certificate="sysadmin", **kw) -> RawClient:
        """A L{RawClient} of this server (SysAdmin certificate by default)."""
        if certificate == "sysadmin":
            certificate = self.server.api_key
        return RawClient(self, self.server.port, certificate, **kw)

    async def call(self, code, message, enclave="", client=None):
        return await (client or self.root).call(code, message, enclave=enclave)

    async def send(self, code, messages, enclave="", client=None):
        return await (client or self.root).send(code, list(messages), enclave=enclave)

    async def fails(self, error: KMSError, awaitable):
        """Await C{awaitable}; it must fail with exactly C{error}."""
        try:
            result = await awaitable
        except KMSError as e:
            self.assertEqual(e, error)
            return e
        self.fail(f"expected {error!r}, got a result: {result!r}")

    def assertError(self, response: RawResponse, status: int, message: str):
        """A raw error reply: status, exact JSON body, Content-Length, no encoding."""
        self.assertEqual(response.status, status, response)
        self.assertEqual(response.header("content-type"), "application/json")
        self.assertEqual(response.json(), {"message": message})
        self.assertEqual(response.header("content-length"), str(len(response.body)))
        self.assertIsNone(response.header("content-encoding"))

    def assertOK(self, response: RawResponse, content_type="application/octet-stream"):
        """A raw 200 with a Content-Length and no content encoding."""
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.header("content-type"), content_type)
        self.assertEqual(response.header("content-length"), str(len(response.body)))
        self.assertIsNone(response.header("content-encoding"))
        self.assertIsNone(response.header("transfer-encoding"))

    async def assertStillServing(self):
        """A new connection still gets CLUSTER:STATUS answered."""
        response = await self.raw().kms(frame(CLUSTER_STATUS))
        self.assertOK(response)
        [status] = decode_frames(CLUSTER_STATUS, response.body)
        self.assertEqual(status.NodesUp[0].Host, self.server.host)

    # -- common set-ups --------------------------------------------------------

    async def enclave(self, name="e1"):
        await self.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=name))

    async def key(self, name, enclave="e1", key_type=""):
        await self.call(KEY_CREATE, pb.CreateKeyRequest(Name=name, Type=key_type), enclave)

    async def identity(
        self, enclave="e1", privilege="User", api_key=None, tags=None, client=None, service_account=False
    ):
        """Register a fresh (or the given) API key's identity; return the key."""
        key = APIKey.parse(api_key or generate_api_key())
        request = pb.CreateIdentityRequest(
            Identity=key.identity,
            Privilege=privilege,
            IsServiceAccount=service_account,
            Tags=tags or {},
        )
        await self.call(IDENTITY_CREATE, request, enclave, client=client)
        return key

    async def policy(self, name, allow=None, deny=None, enclave="e1", client=None):
        request = pb.CreatePolicyRequest(Name=name)
        for section, rules in ((request.Allow, allow or {}), (request.Deny, deny or {})):
            for action, patterns in rules.items():
                rule_set = section[action]
                for pattern in patterns:
                    rule_set.Rules[pattern].SetInParent()
        await self.call(POLICY_CREATE, request, enclave, client=client)

    async def assign(self, identity, policy, enclave="e1"):
        await self.call(POLICY_ASSIGN, pb.AssignPolicyRequest(Identity=identity, Policy=policy), enclave)

    async def whoami(self, client, enclave="e1") -> pb.IdentityResponse:
        """IDENTITY:STATUS with an empty identity: the caller as the server sees it."""
        return await self.call(IDENTITY_STATUS, pb.IdentityRequest(Identity=""), enclave, client=client)

    async def list_pages(self, code, enclave="", prefix="", limit=0, items="Keys"):
        """
        Iterate a LIST command like kms-go's C{Iter}; return the pages as
        lists of names, checking that each ContinueAt is the first name of
        the next page.
        """
        pages = []
        continue_at = ""
        for _ in range(1000):
            response = await self.call(
                code, pb.ListRequest(Prefix=prefix, ContinueAt=continue_at, Limit=limit), enclave
            )
            names = [
                getattr(item, "Name", None) or getattr(item, "Identity", None) for item in getattr(response, items)
            ]
            if pages and continue_at:
                self.assertEqual(names[:1], [continue_at], "ContinueAt is inclusive")
            if limit:
                self.assertLessEqual(len(names), limit)
            if names:
                pages.append(names)
            if not response.ContinueAt or not names:
                return pages
            continue_at = response.ContinueAt
        self.fail("listing does not end")


def flatten(pages):
    return [name for page in pages for name in page]


# --- 1. TLS ------------------------------------------------------------------


class TLSTests(ServerTestCase):
    """
    Item 1: k1: and k2: API-key certificates authenticate as the identities
    of spec 1.5; no certificate still completes the handshake (unprivileged
    endpoints work, /v1/kms is 403); TLS 1.2 and 1.3 both work; a resumed
    session still carries the client's identity.
    """

    async def test_api_key_identities(self):
        """Every identity vector of spec 1.5 (and the shared vectors file) is recomputed."""
        await self.enclave()
        vectors = SPEC_IDENTITY_VECTORS + [
            (row["api_key"], row["identity"]) for row in read_tsv("api-key-identity.tsv")
        ]
        for _api_key, expected in vectors:
            await self.call(IDENTITY_CREATE, pb.CreateIdentityRequest(Identity=expected, Privilege="User"), "e1")
        for api_key, expected in vectors:
            me = await self.whoami(self.client(api_key))
            self.assertEqual((api_key, me.Identity), (api_key, expected))
            self.assertEqual(me.Privilege, PRIV_USER)

    async def test_k1_and_k2_keys_over_raw_tls(self):
        """The stdlib TLS stack presenting k1: and k2: (P-256) certificates."""
        await self.enclave()
        for api_key, expected in (K1_VECTOR, K2_P256_VECTOR):
            await self.call(IDENTITY_CREATE, pb.CreateIdentityRequest(Identity=expected, Privilege="Admin"), "e1")
            response = await self.raw(api_key).kms(body_of(IDENTITY_STATUS, pb.IdentityRequest()), "e1")
            self.assertOK(response)
            [me] = decode_frames(IDENTITY_STATUS, response.body)
            self.assertEqual(me.Identity, expected)
            self.assertEqual(me.Privilege, PRIV_ADMIN)

    async def test_sysadmin_identity(self):
        """The banner's SysAdmin API key is recognised as the SysAdmin."""
        await self.enclave()
        me = await self.whoami(self.root)
        self.assertEqual(me.Identity, self.root_identity)
        self.assertEqual(me.Privilege, PRIV_SYSADMIN)

    async def test_no_client_certificate(self):
        """No certificate: /version and health answer, /v1/kms is 403."""
        raw = self.raw(None)
        version = await raw.request("GET", "/version", accept="application/json")
        self.assertOK(version, "application/json")
        self.assertEqual(version.json()["host"], self.server.host)
        for path in ("/v1/health/live", "/v1/health/ready", "/v1/health/ready?write"):
            response = await raw.request("GET", path)
            self.assertEqual(response.status, 200, path)
        await self.enclave()
        forbidden = [
            ("/v1/kms", frame(CLUSTER_STATUS)),
            ("/v1/kms", body_of(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e2"))),
            ("/v1/kms", body_of(ENCLAVE_LIST, pb.ListRequest())),
            ("/v1/kms/e1", body_of(KEY_LIST, pb.ListRequest())),
            ("/v1/kms/e1", body_of(KEY_CREATE, pb.CreateKeyRequest(Name="k"))),
            ("/v1/kms/e1", body_of(IDENTITY_STATUS, pb.IdentityRequest())),
        ]
        for path, body in forbidden:
            response = await raw.kms(body, path=path)
            self.assertError(response, 403, "access denied: insufficient permissions")
        await self.fails(ErrPermission, self.client(None).call(CLUSTER_STATUS, pb.ClusterStatusRequest()))

    async def _version_check(self, tls_version, name):
        await self.enclave()
        raw = self.raw(tls_version=tls_version)
        response = await raw.kms(body_of(IDENTITY_STATUS, pb.IdentityRequest()), "e1")
        self.assertEqual(response.tls_version, name)
        self.assertOK(response)
        [me] = decode_frames(IDENTITY_STATUS, response.body)
        self.assertEqual(me.Identity, self.root_identity)

    async def test_tls12(self):
        await self._version_check(ssl.TLSVersion.TLSv1_2, "TLSv1.2")

    async def test_tls13(self):
        await self._version_check(ssl.TLSVersion.TLSv1_3, "TLSv1.3")

    async def _resumption_check(self, tls_version, name):
        await self.enclave()
        user = await self.identity(privilege="Admin")
        raw = self.raw(user, tls_version=tls_version)
        body = body_of(IDENTITY_STATUS, pb.IdentityRequest())
        first = await raw.kms(body, "e1")
        self.assertOK(first)
        self.assertFalse(first.session_reused)
        self.assertIsNotNone(first.session)
        second = await raw.kms(body, "e1", session=first.session)
        self.assertEqual(second.tls_version, name)
        self.assertTrue(second.session_reused, "the server did not resume the session")
        self.assertOK(second)
        [me] = decode_frames(IDENTITY_STATUS, second.body)
        self.assertEqual(me.Identity, user.identity)
        self.assertEqual(me.Privilege, PRIV_ADMIN)

    async def test_resumed_session_tls12(self):
        await self._resumption_check(ssl.TLSVersion.TLSv1_2, "TLSv1.2")

    async def test_resumed_session_tls13(self):
        await self._resumption_check(ssl.TLSVersion.TLSv1_3, "TLSv1.3")

    async def test_alpn_offer_of_go(self):
        """Go offers h2 and http/1.1; the node picks http/1.1 and serves it."""
        response = await self.raw().request("GET", "/version")
        self.assertEqual(response.alpn, "http/1.1")
        self.assertEqual(response.status, 200)


# --- 2, 3. Version, Live, Ready -----------------------------------------------


class VersionHealthTests(ServerTestCase):
    """
    Items 2 and 3: /version is protobuf for C{application/octet-stream} and
    proto-JSON with exactly five keys otherwise, and its C{host} is the
    node's --host; live and ready (also ?write) answer 200 to anyone.
    """

    async def test_version_json(self):
        for accept in ("application/json", "application/*"):
            response = await self.raw().request("GET", "/version", accept=accept)
            self.assertOK(response, "application/json")
            doc = response.json()
            self.assertEqual(set(doc), VERSION_KEYS)
            self.assertEqual(doc["host"], self.server.host)
            self.assertEqual(doc["api_version"], "v1")
            self.assertIs(doc["fips140"], False)
            self.assertRegex(doc["version"], VERSION_FORMAT)
            self.assertIsInstance(doc["commit"], str)

    async def test_version_protobuf(self):
        response = await self.raw().request("GET", "/version", accept="application/octet-stream")
        self.assertOK(response, "application/octet-stream")
        version = pb.VersionResponse.FromString(response.body)
        self.assertEqual(version.Host, self.server.host)
        self.assertEqual(version.APIVersion, "v1")
        self.assertRegex(version.Version, VERSION_FORMAT)
        as_json = (await self.raw().request("GET", "/version", accept="application/json")).json()
        self.assertEqual(
            (version.Version, version.Commit, version.FIPS140),
            (as_json["version"], as_json["commit"], as_json["fips140"]),
        )

    async def test_version_via_client(self):
        data = await self.root.get("/version")
        self.assertEqual(pb.VersionResponse.FromString(data).Host, self.server.host)

    async def test_live_ready(self):
        raw = self.raw(None)
        for path in ("/v1/health/live", "/v1/health/ready", "/v1/health/ready?write"):
            response = await raw.request("GET", path)
            self.assertEqual(response.status, 200, path)
            self.assertEqual(response.header("content-length"), str(len(response.body)), path)
            self.assertIsNone(response.header("content-encoding"), path)


# --- 4. ClusterStatus ---------------------------------------------------------


class ClusterStatusTests(ServerTestCase):
    """
    Item 4: a single node reports itself as the one node up, Leader, ID 0,
    LeaderID 0, Nodes {0: host}; only the SysAdmin may ask.
    """

    async def test_sysadmin(self):
        status = await self.call(CLUSTER_STATUS, pb.ClusterStatusRequest())
        self.assertEqual(list(status.NodesUp), [0])
        self.assertEqual(dict(status.NodesDown), {})
        node = status.NodesUp[0]
        self.assertEqual(node.Role, "Leader")
        self.assertEqual(node.ID, 0)
        self.assertEqual(node.LeaderID, 0)
        self.assertEqual(dict(node.Nodes), {0: self.server.host})
        self.assertEqual(node.Host, self.server.host)
        self.assertEqual(node.APIVersion, "v1")
        self.assertRegex(node.Version, VERSION_FORMAT)
        self.assertIn(node.Arch, ("amd64", "arm64", "386", "arm", "ppc64le", "s390x", "riscv64"))
        self.assertGreaterEqual(node.CPUs, 1)

    async def test_raw_hex_example(self):
        """The spec's hex example C{00 03 00 00 00 00} gets exactly one frame."""
        response = await self.raw().kms(unhex("00 03 00 00 00 00"))
        self.assertOK(response)
        self.assertEqual(response.body[:2], b"\x00\x03")
        [status] = decode_frames(CLUSTER_STATUS, response.body)
        self.assertEqual(status.NodesUp[0].Role, "Leader")

    async def test_not_sysadmin(self):
        await self.enclave()
        admin = await self.identity(privilege="Admin")
        user = await self.identity(privilege="User")
        for key in (admin, user, APIKey.parse(generate_api_key())):
            await self.fails(ErrPermission, self.client(key).call(CLUSTER_STATUS, pb.ClusterStatusRequest()))


# --- 5. Enclaves --------------------------------------------------------------


class EnclaveTests(ServerTestCase):
    """
    Item 5: create, 409 on a second create, batched status (404 for the
    whole batch when one is missing), and listing by prefix and pages.
    """

    async def test_create_exists_status(self):
        before = time.time()
        await self.enclave("e1")
        await self.fails(ErrEnclaveExists, self.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e1")))
        [status] = await self.send(ENCLAVE_STATUS, [pb.EnclaveStatusRequest(Name="e1")])
        self.assertEqual(status.Name, "e1")
        self.assertEqual(status.CreatedBy, self.root_identity)
        self.assertLessEqual(abs(status.CreatedAt.ToSeconds() - before), 60)
        await self.enclave("e2")
        both = await self.send(ENCLAVE_STATUS, [pb.EnclaveStatusRequest(Name="e2"), pb.EnclaveStatusRequest(Name="e1")])
        self.assertEqual([s.Name for s in both], ["e2", "e1"])
        await self.fails(
            ErrEnclaveNotFound,
            self.send(
                ENCLAVE_STATUS,
                [pb.EnclaveStatusRequest(Name="e1"), pb.EnclaveStatusRequest(Name="missing")],
            ),
        )

    async def test_hex_example_create(self):
        """The spec's ENCLAVE:CREATE {name:"minio"} bytes create "minio"."""
        response = await self.raw().kms(unhex("00 65 00 00 00 07 0a 05 6d 69 6e 69 6f"))
        self.assertOK(response)
        self.assertEqual(response.body, unhex("00 65 00 00 00 00"))
        [status] = await self.send(ENCLAVE_STATUS, [pb.EnclaveStatusRequest(Name="minio")])
        self.assertEqual(status.Name, "minio")

    async def test_list(self):
        names = ["a-0", "a-1", "a-2", "a-3", "a-4", "b-0", "b-1"]
        for name in reversed(names):
            await self.enclave(name)
        everything = await self.list_pages(ENCLAVE_LIST, items="Enclaves")
        self.assertEqual(flatten(everything), names)
        for limit in range(1, len(names) + 2):
            pages = await self.list_pages(ENCLAVE_LIST, limit=limit, items="Enclaves")
            self.assertEqual(flatten(pages), names, f"limit {limit}")
            self.assertEqual(len(pages), -(-len(names) // limit), f"limit {limit}")
        for limit in (1, 2, 10):
            pages = await self.list_pages(ENCLAVE_LIST, prefix="a-", limit=limit, items="Enclaves")
            self.assertEqual(flatten(pages), names[:5])
        page = await self.call(ENCLAVE_LIST, pb.ListRequest(Prefix="a-", ContinueAt="b-0"))
        self.assertEqual((list(page.Enclaves), page.ContinueAt), ([], ""))


# --- 6-12. Keys ----------------------------------------------------------------


class KeyTests(ServerTestCase):
    """
    Items 6 to 12: key creation, import, status, listing, data keys,
    encryption, MACs and deletion, with the canonical errors.
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")

    async def status(self, name, version=0):
        return await self.call(KEY_STATUS, pb.KeyStatusRequest(Name=name, Version=version), "e1")

    async def encrypt(self, name, plaintext, aad=b"", version=0):
        return await self.call(
            KEY_ENCRYPT,
            pb.EncryptRequest(Name=name, Version=version, Plaintext=plaintext, AssociatedData=aad),
            "e1",
        )

    async def decrypt(self, name, ciphertext, aad=b"", version=0):
        response = await self.call(
            KEY_DECRYPT,
            pb.DecryptRequest(Name=name, Version=version, Ciphertext=ciphertext, AssociatedData=aad),
            "e1",
        )
        return response.Plaintext

    async def rotate(self, name):
        await self.call(KEY_CREATE, pb.CreateKeyRequest(Name=name, AddVersion=True), "e1")

    # item 6
    async def test_create_default_type(self):
        before = time.time()
        await self.key("k")
        status = await self.status("k")
        self.assertEqual((status.Name, status.Version, status.Type), ("k", 1, "AES256"))
        self.assertEqual(status.CreatedBy, self.root_identity)
        self.assertLessEqual(abs(status.CreatedAt.ToSeconds() - before), 60)
        await self.fails(ErrKeyExists, self.call(KEY_CREATE, pb.CreateKeyRequest(Name="k"), "e1"))

    async def test_create_chacha20(self):
        await self.key("c", key_type="ChaCha20")
        status = await self.status("c")
        self.assertEqual(status.Type, "ChaCha20")
        sealed = await self.encrypt("c", b"secret", b"aad")
        self.assertEqual(await self.decrypt("c", sealed.Ciphertext, b"aad"), b"secret")

    async def test_add_version(self):
        await self.key("k")
        await self.rotate("k")
        self.assertEqual((await self.status("k")).Version, 2)
        self.assertEqual((await self.status("k", 1)).Version, 1)
        self.assertEqual((await self.status("k")).Type, "AES256")

    async def test_import(self):
        material = os.urandom(32)
        await self.call(KEY_IMPORT, pb.ImportKeyRequest(Name="imp", Key=material), "e1")
        status = await self.status("imp")
        self.assertEqual((status.Version, status.Type), (1, "AES256"))
        sealed = await self.encrypt("imp", b"data")
        self.assertEqual(await self.decrypt("imp", sealed.Ciphertext), b"data")
        await self.fails(
            ErrKeyExists,
            self.call(KEY_IMPORT, pb.ImportKeyRequest(Name="imp", Key=os.urandom(32)), "e1"),
        )
        await self.key("k")
        await self.fails(ErrKeyExists, self.call(KEY_IMPORT, pb.ImportKeyRequest(Name="k", Key=material), "e1"))
        await self.fails(
            KMSError(400, "invalid key: a AES256 key must be 32 bytes, not 16"),
            self.call(KEY_IMPORT, pb.ImportKeyRequest(Name="short", Key=os.urandom(16)), "e1"),
        )
        await self.fails(ErrKeyNotFound, self.status("short"))

    # item 7
    async def test_status_batch(self):
        await self.key("k1")
        await self.key("k2")
        await self.rotate("k2")
        await self.rotate("k2")
        both = await self.send(
            KEY_STATUS,
            [
                pb.KeyStatusRequest(Name="k1"),
                pb.KeyStatusRequest(Name="k2", Version=3),
                pb.KeyStatusRequest(Name="k2", Version=2),
                pb.KeyStatusRequest(Name="k2"),
            ],
            "e1",
        )
        self.assertEqual([(s.Name, s.Version) for s in both], [("k1", 1), ("k2", 3), ("k2", 2), ("k2", 3)])
        for missing in (pb.KeyStatusRequest(Name="nope"), pb.KeyStatusRequest(Name="k2", Version=4)):
            await self.fails(ErrKeyNotFound, self.send(KEY_STATUS, [pb.KeyStatusRequest(Name="k1"), missing], "e1"))

    async def test_status_batch_hex_example(self):
        """The spec's batch of two KEY:STATUS frames (k1 latest, k2 version 3)."""
        await self.key("k1")
        await self.key("k2")
        await self.rotate("k2")
        await self.rotate("k2")
        body = unhex("00 cc 00 00 00 04 0a 02 6b 31 00 cc 00 00 00 06 0a 02 6b 32 10 03")
        response = await self.raw().kms(body, "e1")
        self.assertOK(response)
        replies = decode_frames(KEY_STATUS, response.body)
        self.assertEqual([(s.Name, s.Version, s.Type) for s in replies], [("k1", 1, "AES256"), ("k2", 3, "AES256")])

    # item 8
    async def test_list_pagination(self):
        names = [f"key-{i}" for i in range(6)] + ["other"]
        for name in reversed(names):
            await self.key(name)
        await self.rotate("key-3")
        pages = await self.list_pages(KEY_LIST, "e1")
        self.assertEqual(flatten(pages), names)
        for limit in range(1, len(names) + 2):
            pages = await self.list_pages(KEY_LIST, "e1", limit=limit)
            self.assertEqual(flatten(pages), names, f"limit {limit}")
            self.assertEqual([len(p) for p in pages[:-1]], [limit] * (len(pages) - 1))
        for limit in (0, 1, 4):
            pages = await self.list_pages(KEY_LIST, "e1", prefix="key-", limit=limit)
            self.assertEqual(flatten(pages), names[:6])
        listing = await self.call(KEY_LIST, pb.ListRequest(Prefix="key-3"), "e1")
        [item] = listing.Keys
        self.assertEqual(
            (item.Name, item.Version, item.Type, item.CreatedBy), ("key-3", 2, "AES256", self.root_identity)
        )
        page = await self.call(KEY_LIST, pb.ListRequest(Limit=2, ContinueAt="key-2"), "e1")
        self.assertEqual([k.Name for k in page.Keys], ["key-2", "key-3"])
        self.assertEqual(page.ContinueAt, "key-4")

    # item 9
    async def test_generate_key(self):
        await self.key("k")
        aad = b'{"bucket":"b","object":"o"}'
        for length, expected in ((0, 32), (64, 64), (1024, 1024), (1, 1)):
            dek = await self.call(
                KEY_GENERATE, pb.GenerateKeyRequest(Name="k", Length=length, AssociatedData=aad), "e1"
            )
            self.assertEqual(len(dek.Plaintext), expected)
            self.assertEqual(dek.Version, 1)
            self.assertEqual(await self.decrypt("k", dek.Ciphertext, aad), dek.Plaintext)
            await self.fails(ErrDecrypt, self.decrypt("k", dek.Ciphertext, b"other"))
        await self.fails(
            KMSError(400, "invalid key length 1025: must be at most 1024 bytes"),
            self.call(KEY_GENERATE, pb.GenerateKeyRequest(Name="k", Length=1025), "e1"),
        )
        await self.fails(ErrKeyNotFound, self.call(KEY_GENERATE, pb.GenerateKeyRequest(Name="nope"), "e1"))

    async def test_generate_batch_of_three(self):
        await self.key("k")
        await self.key("c", key_type="ChaCha20")
        deks = await self.send(
            KEY_GENERATE,
            [
                pb.GenerateKeyRequest(Name="k", AssociatedData=b"1"),
                pb.GenerateKeyRequest(Name="c", Length=16, AssociatedData=b"2"),
                pb.GenerateKeyRequest(Name="k", Length=48),
            ],
            "e1",
        )
        self.assertEqual([len(d.Plaintext) for d in deks], [32, 16, 48])
        self.assertEqual(len({d.Plaintext for d in deks}), 3)
        self.assertEqual(await self.decrypt("k", deks[0].Ciphertext, b"1"), deks[0].Plaintext)
        self.assertEqual(await self.decrypt("c", deks[1].Ciphertext, b"2"), deks[1].Plaintext)
        self.assertEqual(await self.decrypt("k", deks[2].Ciphertext), deks[2].Plaintext)

    async def test_generate_hex_example(self):
        """The spec's KEY:GENERATE {name:"my-key", length:32} bytes."""
        await self.key("my-key")
        response = await self.raw().kms(unhex("00 cf 00 00 00 0a 0a 06 6d 79 2d 6b 65 79 20 20"), "e1")
        self.assertOK(response)
        [dek] = decode_frames(KEY_GENERATE, response.body)
        self.assertEqual((dek.Version, len(dek.Plaintext)), (1, 32))
        self.assertEqual(await self.decrypt("my-key", dek.Ciphertext), dek.Plaintext)

    # item 10
    async def test_encrypt_decrypt(self):
        await self.key("k")
        sealed = await self.encrypt("k", b"plaintext", b"context")
        self.assertEqual(sealed.Version, 1)
        self.assertNotIn(b"plaintext", sealed.Ciphertext)
        self.assertFalse(sealed.Ciphertext.startswith(b"{"), "MinIO treats {...} as legacy JSON")
        self.assertEqual(await self.decrypt("k", sealed.Ciphertext, b"context"), b"plaintext")
        self.assertEqual(await self.decrypt("k", sealed.Ciphertext, b"context", version=1), b"plaintext")
        await self.fails(ErrDecrypt, self.decrypt("k", sealed.Ciphertext, b"other"))
        await self.fails(ErrDecrypt, self.decrypt("k", sealed.Ciphertext, b""))
        for i in range(len(sealed.Ciphertext)):
            tampered = bytearray(sealed.Ciphertext)
            tampered[i] ^= 0x01
            try:
                await self.decrypt("k", bytes(tampered), b"context")
            except KMSError as e:
                self.assertIn(e, (ErrDecrypt, ErrKeyNotFound), f"byte {i}")
            else:
                self.fail(f"tampered byte {i} decrypted")
        await self.fails(ErrDecrypt, self.decrypt("k", sealed.Ciphertext[:-1], b"context"))
        await self.fails(ErrDecrypt, self.decrypt("k", b"", b"context"))
        await self.fails(ErrDecrypt, self.decrypt("k", b"garbage", b"context"))
        await self.fails(ErrKeyNotFound, self.decrypt("nope", sealed.Ciphertext, b"context"))
        batch = await self.send(
            KEY_ENCRYPT,
            [pb.EncryptRequest(Name="k", Plaintext=b"a"), pb.EncryptRequest(Name="k", Plaintext=b"b")],
            "e1",
        )
        plain = await self.send(
            KEY_DECRYPT, [pb.DecryptRequest(Name="k", Ciphertext=c.Ciphertext) for c in batch], "e1"
        )
        self.assertEqual([p.Plaintext for p in plain], [b"a", b"b"])

    async def test_decrypt_after_rotation(self):
        await self.key("k")
        old = await self.encrypt("k", b"v1 data", b"aad")
        await self.rotate("k")
        new = await self.encrypt("k", b"v2 data", b"aad")
        self.assertEqual((old.Version, new.Version), (1, 2))
        self.assertEqual(await self.decrypt("k", old.Ciphertext, b"aad"), b"v1 data")
        self.assertEqual(await self.decrypt("k", old.Ciphertext, b"aad", version=1), b"v1 data")
        self.assertEqual(await self.decrypt("k", new.Ciphertext, b"aad", version=2), b"v2 data")
        await self.fails(ErrDecrypt, self.decrypt("k", old.Ciphertext, b"aad", version=2))
        pinned = await self.encrypt("k", b"pinned", version=1)
        self.assertEqual(pinned.Version, 1)
        self.assertEqual(await self.decrypt("k", pinned.Ciphertext), b"pinned")

    # item 11
    async def test_mac(self):
        await self.key("k")
        one = await self.call(KEY_MAC, pb.MACRequest(Name="k", Message=b"message"), "e1")
        again = await self.call(KEY_MAC, pb.MACRequest(Name="k", Message=b"message"), "e1")
        other = await self.call(KEY_MAC, pb.MACRequest(Name="k", Message=b"messagE"), "e1")
        self.assertEqual(one.Version, 1)
        self.assertEqual(one.MAC, again.MAC)
        self.assertNotEqual(one.MAC, other.MAC)
        self.assertGreaterEqual(len(one.MAC), 16)
        await self.rotate("k")
        rotated = await self.call(KEY_MAC, pb.MACRequest(Name="k", Message=b"message"), "e1")
        self.assertEqual(rotated.Version, 2)
        self.assertNotEqual(rotated.MAC, one.MAC)
        pinned = await self.call(KEY_MAC, pb.MACRequest(Name="k", Version=1, Message=b"message"), "e1")
        self.assertEqual((pinned.Version, pinned.MAC), (1, one.MAC))
        await self.key("k2")
        foreign = await self.call(KEY_MAC, pb.MACRequest(Name="k2", Message=b"message"), "e1")
        self.assertNotEqual(foreign.MAC, one.MAC)
        await self.fails(ErrKeyNotFound, self.call(KEY_MAC, pb.MACRequest(Name="k", Version=3), "e1"))

    # item 12
    async def test_delete(self):
        await self.key("k")
        await self.rotate("k")
        await self.rotate("k")
        sealed = {}
        for version in (1, 2, 3):
            sealed[version] = (await self.encrypt("k", b"v%d" % version, version=version)).Ciphertext
        # latest
        await self.call(KEY_DELETE, pb.DeleteKeyRequest(Name="k"), "e1")
        self.assertEqual((await self.status("k")).Version, 2)
        await self.fails(ErrKeyNotFound, self.status("k", 3))
        await self.fails(ErrKeyNotFound, self.decrypt("k", sealed[3]))
        self.assertEqual(await self.decrypt("k", sealed[2]), b"v2")
        # a specific version
        await self.call(KEY_DELETE, pb.DeleteKeyRequest(Name="k", Version=1), "e1")
        await self.fails(ErrKeyNotFound, self.status("k", 1))
        await self.fails(ErrKeyNotFound, self.decrypt("k", sealed[1]))
        await self.fails(ErrKeyNotFound, self.call(KEY_DELETE, pb.DeleteKeyRequest(Name="k", Version=1), "e1"))
        # removed version numbers are never reused
        await self.rotate("k")
        self.assertEqual((await self.status("k")).Version, 4)
        await self.fails(ErrKeyNotFound, self.decrypt("k", sealed[3]))
        # AllVersions with a version is refused
        await self.fails(
            KMSError(400, "invalid arguments: cannot delete all versions and a specific version at once"),
            self.call(KEY_DELETE, pb.DeleteKeyRequest(Name="k", Version=2, AllVersions=True), "e1"),
        )
        # every version
        await self.call(KEY_DELETE, pb.DeleteKeyRequest(Name="k", AllVersions=True), "e1")
        await self.fails(ErrKeyNotFound, self.status("k"))
        await self.fails(ErrKeyNotFound, self.decrypt("k", sealed[2]))
        self.assertEqual(flatten(await self.list_pages(KEY_LIST, "e1")), [])
        await self.fails(ErrKeyNotFound, self.call(KEY_DELETE, pb.DeleteKeyRequest(Name="k"), "e1"))
        # a key created again under the old name does not open old ciphertexts
        await self.key("k")
        self.assertGreater((await self.status("k")).Version, 4)
        await self.fails(ErrKeyNotFound, self.decrypt("k", sealed[2]))

    async def test_missing_enclave(self):
        await self.fails(ErrEnclaveNotFound, self.call(KEY_CREATE, pb.CreateKeyRequest(Name="k"), "nope"))
        await self.fails(ErrEnclaveNotFound, self.call(KEY_STATUS, pb.KeyStatusRequest(Name="k"), "nope"))


# --- 13. Policies --------------------------------------------------------------


class PolicyTests(ServerTestCase):
    """
    Item 13: policies are created (or overwritten) with allow and deny
    rules that read back unchanged; status, list, and 404 when missing.
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")

    async def test_round_trip(self):
        allow = {"KEY:ENCRYPT": ["k*"], "KEY:DECRYPT": ["*"], "KEY:STATUS": ["k1", "k22", "other*"]}
        deny = {"KEY:DECRYPT": ["k-secret*"]}
        await self.policy("p1", allow, deny)
        [got] = await self.send(POLICY_GET, [pb.PolicyRequest(Name="p1")], "e1")
        self.assertEqual(got.Name, "p1")
        self.assertEqual({a: sorted(r.Rules) for a, r in got.Allow.items()}, {a: sorted(p) for a, p in allow.items()})
        self.assertEqual({a: sorted(r.Rules) for a, r in got.Deny.items()}, {a: sorted(p) for a, p in deny.items()})
        self.assertEqual(got.CreatedBy, self.root_identity)
        self.assertGreater(got.CreatedAt.seconds, 0)
        # overwritten by a second create
        await self.policy("p1", {"KEY:MAC": ["m"]})
        got = await self.call(POLICY_GET, pb.PolicyRequest(Name="p1"), "e1")
        self.assertEqual({a: sorted(r.Rules) for a, r in got.Allow.items()}, {"KEY:MAC": ["m"]})
        self.assertEqual(dict(got.Deny), {})

    async def test_status_and_list(self):
        for name in ("p3", "p1", "p2", "q1"):
            await self.policy(name, {"KEY:STATUS": ["*"]})
        statuses = await self.send(POLICY_STATUS, [pb.PolicyRequest(Name="p2"), pb.PolicyRequest(Name="q1")], "e1")
        self.assertEqual([s.Name for s in statuses], ["p2", "q1"])
        self.assertEqual({s.CreatedBy for s in statuses}, {self.root_identity})
        pages = await self.list_pages(POLICY_LIST, "e1", items="Policies")
        self.assertEqual(flatten(pages), ["p1", "p2", "p3", "q1"])
        pages = await self.list_pages(POLICY_LIST, "e1", prefix="p", limit=2, items="Policies")
        self.assertEqual(pages, [["p1", "p2"], ["p3"]])

    async def test_missing(self):
        await self.policy("p1", {"KEY:STATUS": ["*"]})
        user = await self.identity()
        for call in (
            self.call(POLICY_GET, pb.PolicyRequest(Name="nope"), "e1"),
            self.send(POLICY_GET, [pb.PolicyRequest(Name="p1"), pb.PolicyRequest(Name="nope")], "e1"),
            self.send(POLICY_STATUS, [pb.PolicyRequest(Name="p1"), pb.PolicyRequest(Name="nope")], "e1"),
            self.call(POLICY_DELETE, pb.DeletePolicyRequest(Name="nope"), "e1"),
            self.call(POLICY_ASSIGN, pb.AssignPolicyRequest(Identity=user.identity, Policy="nope"), "e1"),
        ):
            await self.fails(ErrPolicyNotFound, call)


# --- 14. Identities -------------------------------------------------------------


class IdentityTests(ServerTestCase):
    """
    Item 14: Users and Admins with tags, service accounts, status, listing,
    and the errors of POLICY:ASSIGN.
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")

    async def test_create_get_list(self):
        user = await self.identity(privilege="User", tags={"team": "storage", "env": "prod"})
        admin = await self.identity(privilege="Admin")
        default = await self.identity(privilege="")
        got = await self.send(
            IDENTITY_STATUS,
            [pb.IdentityRequest(Identity=i.identity) for i in (user, admin, default)],
            "e1",
        )
        self.assertEqual([g.Identity for g in got], [user.identity, admin.identity, default.identity])
        self.assertEqual([g.Privilege for g in got], [PRIV_USER, PRIV_ADMIN, PRIV_USER])
        self.assertEqual(dict(got[0].Tags), {"team": "storage", "env": "prod"})
        self.assertEqual({g.CreatedBy for g in got}, {self.root_identity})
        self.assertEqual({g.IsServiceAccount for g in got}, {False})
        self.assertTrue(all(g.CreatedAt.seconds > 0 for g in got))
        pages = await self.list_pages(IDENTITY_LIST, "e1", items="Identities")
        self.assertEqual(flatten(pages), sorted([user.identity, admin.identity, default.identity]))
        pages = await self.list_pages(IDENTITY_LIST, "e1", limit=1, items="Identities")
        self.assertEqual(len(pages), 3)
        await self.fails(
            ErrIdentityNotFound,
            self.send(
                IDENTITY_STATUS,
                [
                    pb.IdentityRequest(Identity=user.identity),
                    pb.IdentityRequest(Identity=APIKey.parse(generate_api_key()).identity),
                ],
                "e1",
            ),
        )

    async def test_service_account(self):
        admin = await self.identity(privilege="Admin")
        admin_client = self.client(admin)
        service = await self.identity(service_account=True, privilege="", client=admin_client)
        record = await self.call(IDENTITY_STATUS, pb.IdentityRequest(Identity=service.identity), "e1")
        self.assertTrue(record.IsServiceAccount)
        self.assertEqual(record.CreatedBy, admin.identity)
        self.assertEqual(record.Privilege, PRIV_ADMIN)
        parent = await self.call(IDENTITY_STATUS, pb.IdentityRequest(Identity=admin.identity), "e1")
        self.assertEqual(list(parent.ServiceAccounts), [service.identity])
        # the service account acts with its parent's rights
        await self.key("k")
        me = await self.whoami(self.client(service))
        self.assertEqual(me.Identity, service.identity)
        sealed = await self.call(
            KEY_ENCRYPT, pb.EncryptRequest(Name="k", Plaintext=b"x"), "e1", client=self.client(service)
        )
        self.assertEqual(sealed.Version, 1)

    async def test_assign_policy(self):
        await self.policy("p1", {"KEY:STATUS": ["*"]})
        user = await self.identity()
        await self.assign(user.identity, "p1")
        got = await self.call(IDENTITY_STATUS, pb.IdentityRequest(Identity=user.identity), "e1")
        self.assertEqual(got.Policy, "p1")
        stranger = APIKey.parse(generate_api_key()).identity
        await self.fails(ErrIdentityNotFound, self.assign(stranger, "p1"))
        await self.fails(ErrPolicyNotFound, self.assign(user.identity, "nope"))
        admin = await self.identity(privilege="Admin")
        await self.fails(
            KMSError(
                400, "cannot assign a policy to an identity with privilege Admin: only User identities have policies"
            ),
            self.assign(admin.identity, "p1"),
        )

    async def test_invalid_identities(self):
        await self.fails(
            KMSError(400, "invalid identity: empty"),
            self.call(IDENTITY_CREATE, pb.CreateIdentityRequest(Identity=""), "e1"),
        )
        await self.fails(
            KMSError(400, "invalid identity 'h1:abc': expected 'h1:' and 43 base64url characters"),
            self.call(IDENTITY_CREATE, pb.CreateIdentityRequest(Identity="h1:abc"), "e1"),
        )
        await self.fails(
            KMSError(400, "invalid privilege: SysAdmin cannot be given to an identity in an enclave"),
            self.call(
                IDENTITY_CREATE,
                pb.CreateIdentityRequest(Identity=APIKey.parse(generate_api_key()).identity, Privilege="SysAdmin"),
                "e1",
            ),
        )


# --- 15. Authorization --------------------------------------------------------


class AuthorizationTests(ServerTestCase):
    """
    Item 15: a User does what its policy allows and nothing else (deny
    wins), an Admin everything in its own enclave only and no cluster
    command, an unknown identity nothing; a service account inherits its
    parent's rights and disappears with it.
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")
        await self.enclave("e2")
        for name in ("k1", "k2", "x1"):
            await self.key(name)
        await self.key("k1", enclave="e2")
        await self.policy(
            "encrypt-only",
            allow={"KEY:ENCRYPT": ["k*"], "KEY:DECRYPT": ["*"], "IDENTITY:CREATE": ["*"]},
            deny={"KEY:DECRYPT": ["k*"]},
        )
        self.user = await self.identity()
        await self.assign(self.user.identity, "encrypt-only")
        self.user_client = self.client(self.user)

    async def test_user(self):
        c = self.user_client
        sealed = await self.call(KEY_ENCRYPT, pb.EncryptRequest(Name="k1", Plaintext=b"p"), "e1", client=c)
        self.assertEqual(sealed.Version, 1)
        await self.fails(
            ErrPermission,
            self.call(KEY_DECRYPT, pb.DecryptRequest(Name="k1", Ciphertext=sealed.Ciphertext), "e1", client=c),
        )
        other = await self.call(KEY_ENCRYPT, pb.EncryptRequest(Name="x1", Plaintext=b"p"), "e1")
        plain = await self.call(KEY_DECRYPT, pb.DecryptRequest(Name="x1", Ciphertext=other.Ciphertext), "e1", client=c)
        self.assertEqual(plain.Plaintext, b"p")
        await self.fails(
            ErrPermission, self.call(KEY_ENCRYPT, pb.EncryptRequest(Name="x1", Plaintext=b"p"), "e1", client=c)
        )
        # one denied frame fails the whole batch
        await self.fails(
            ErrPermission,
            self.send(KEY_ENCRYPT, [pb.EncryptRequest(Name="k1"), pb.EncryptRequest(Name="x1")], "e1", client=c),
        )
        for code, message, enclave in (
            (ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e3"), ""),
            (ENCLAVE_LIST, pb.ListRequest(), ""),
            (CLUSTER_STATUS, pb.ClusterStatusRequest(), ""),
            (KEY_CREATE, pb.CreateKeyRequest(Name="k9"), "e1"),
            (KEY_GENERATE, pb.GenerateKeyRequest(Name="k1"), "e1"),
            (KEY_DELETE, pb.DeleteKeyRequest(Name="k1"), "e1"),
            (POLICY_CREATE, pb.CreatePolicyRequest(Name="mine"), "e1"),
            (KEY_ENCRYPT, pb.EncryptRequest(Name="k1"), "e2"),
        ):
            await self.fails(ErrPermission, self.call(code, message, enclave, client=c))

    async def test_admin(self):
        admin = await self.identity(privilege="Admin")
        c = self.client(admin)
        # everything inside e1
        await self.call(KEY_CREATE, pb.CreateKeyRequest(Name="a1"), "e1", client=c)
        sealed = await self.call(KEY_ENCRYPT, pb.EncryptRequest(Name="a1", Plaintext=b"p"), "e1", client=c)
        plain = await self.call(KEY_DECRYPT, pb.DecryptRequest(Name="a1", Ciphertext=sealed.Ciphertext), "e1", client=c)
        self.assertEqual(plain.Plaintext, b"p")
        await self.call(KEY_GENERATE, pb.GenerateKeyRequest(Name="k1"), "e1", client=c)
        await self.call(KEY_MAC, pb.MACRequest(Name="k1", Message=b"m"), "e1", client=c)
        keys = await self.call(KEY_LIST, pb.ListRequest(), "e1", client=c)
        self.assertEqual([k.Name for k in keys.Keys], ["a1", "k1", "k2", "x1"])
        await self.call(KEY_DELETE, pb.DeleteKeyRequest(Name="a1"), "e1", client=c)
        await self.policy("admin-made", {"KEY:STATUS": ["*"]}, client=c)
        new_user = await self.identity(client=c)
        await self.call(
            POLICY_ASSIGN, pb.AssignPolicyRequest(Identity=new_user.identity, Policy="admin-made"), "e1", client=c
        )
        await self.call(IDENTITY_LIST, pb.ListRequest(), "e1", client=c)
        await self.call(IDENTITY_DELETE, pb.DeleteIdentityRequest(Identity=new_user.identity), "e1", client=c)
        # nothing in e2, in a missing enclave, or at cluster level
        for code, message, enclave in (
            (KEY_STATUS, pb.KeyStatusRequest(Name="k1"), "e2"),
            (KEY_CREATE, pb.CreateKeyRequest(Name="a2"), "e2"),
            (KEY_LIST, pb.ListRequest(), "e2"),
            (KEY_STATUS, pb.KeyStatusRequest(Name="k1"), "e3"),
            (CLUSTER_STATUS, pb.ClusterStatusRequest(), ""),
            (ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e3"), ""),
            (ENCLAVE_DELETE, pb.DeleteEnclaveRequest(Name="e1"), ""),
            (ENCLAVE_STATUS, pb.EnclaveStatusRequest(Name="e1"), ""),
            (ENCLAVE_LIST, pb.ListRequest(), ""),
        ):
            await self.fails(ErrPermission, self.call(code, message, enclave, client=c))

    async def test_unknown_identity(self):
        c = self.client(generate_api_key())
        for code, message, enclave in (
            (KEY_STATUS, pb.KeyStatusRequest(Name="k1"), "e1"),
            (KEY_ENCRYPT, pb.EncryptRequest(Name="k1"), "e1"),
            (IDENTITY_STATUS, pb.IdentityRequest(), "e1"),
            (CLUSTER_STATUS, pb.ClusterStatusRequest(), ""),
            (ENCLAVE_LIST, pb.ListRequest(), ""),
        ):
            await self.fails(ErrPermission, self.call(code, message, enclave, client=c))

    async def test_service_account_inherits_and_disappears(self):
        service = await self.identity(service_account=True, privilege="", client=self.user_client)
        c = self.client(service)
        sealed = await self.call(KEY_ENCRYPT, pb.EncryptRequest(Name="k2", Plaintext=b"p"), "e1", client=c)
        await self.fails(
            ErrPermission,
            self.call(KEY_DECRYPT, pb.DecryptRequest(Name="k2", Ciphertext=sealed.Ciphertext), "e1", client=c),
        )
        await self.fails(ErrPermission, self.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e3"), "", client=c))
        await self.fails(ErrPermission, self.call(KEY_CREATE, pb.CreateKeyRequest(Name="k5"), "e1", client=c))
        record = await self.call(IDENTITY_STATUS, pb.IdentityRequest(Identity=service.identity), "e1")
        self.assertEqual(
            (record.IsServiceAccount, record.Privilege, record.CreatedBy), (True, PRIV_USER, self.user.identity)
        )
        await self.call(IDENTITY_DELETE, pb.DeleteIdentityRequest(Identity=self.user.identity), "e1")
        await self.fails(
            ErrPermission, self.call(KEY_ENCRYPT, pb.EncryptRequest(Name="k2", Plaintext=b"p"), "e1", client=c)
        )
        await self.fails(
            ErrIdentityNotFound, self.call(IDENTITY_STATUS, pb.IdentityRequest(Identity=service.identity), "e1")
        )


# --- 16. Deletes ---------------------------------------------------------------


class DeleteTests(ServerTestCase):
    """
    Item 16: deleting a policy takes its rights away, deleting an identity
    takes its service accounts with it, deleting an enclave takes its keys,
    policies and identities; later calls answer 404.
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")
        await self.key("k")

    async def test_delete_policy(self):
        await self.policy("p", {"KEY:ENCRYPT": ["*"]})
        user = await self.identity()
        await self.assign(user.identity, "p")
        c = self.client(user)
        await self.call(KEY_ENCRYPT, pb.EncryptRequest(Name="k"), "e1", client=c)
        await self.call(POLICY_DELETE, pb.DeletePolicyRequest(Name="p"), "e1")
        await self.fails(ErrPolicyNotFound, self.call(POLICY_GET, pb.PolicyRequest(Name="p"), "e1"))
        await self.fails(ErrPolicyNotFound, self.call(POLICY_DELETE, pb.DeletePolicyRequest(Name="p"), "e1"))
        await self.fails(ErrPermission, self.call(KEY_ENCRYPT, pb.EncryptRequest(Name="k"), "e1", client=c))
        self.assertEqual(flatten(await self.list_pages(POLICY_LIST, "e1", items="Policies")), [])

    async def test_delete_identity_with_service_accounts(self):
        admin = await self.identity(privilege="Admin")
        admin_client = self.client(admin)
        services = [await self.identity(service_account=True, privilege="", client=admin_client) for _ in range(2)]
        for service in services:
            await self.call(KEY_STATUS, pb.KeyStatusRequest(Name="k"), "e1", client=self.client(service))
        await self.call(IDENTITY_DELETE, pb.DeleteIdentityRequest(Identity=admin.identity), "e1")
        for gone in [admin] + services:
            await self.fails(
                ErrIdentityNotFound, self.call(IDENTITY_STATUS, pb.IdentityRequest(Identity=gone.identity), "e1")
            )
            await self.fails(
                ErrPermission, self.call(KEY_STATUS, pb.KeyStatusRequest(Name="k"), "e1", client=self.client(gone))
            )
        self.assertEqual(flatten(await self.list_pages(IDENTITY_LIST, "e1", items="Identities")), [])
        await self.fails(
            ErrIdentityNotFound, self.call(IDENTITY_DELETE, pb.DeleteIdentityRequest(Identity=admin.identity), "e1")
        )

    async def test_delete_enclave(self):
        await self.policy("p", {"KEY:ENCRYPT": ["*"]})
        admin = await self.identity(privilege="Admin")
        sealed = await self.call(KEY_ENCRYPT, pb.EncryptRequest(Name="k", Plaintext=b"p"), "e1")
        await self.call(ENCLAVE_DELETE, pb.DeleteEnclaveRequest(Name="e1"))
        await self.fails(ErrEnclaveNotFound, self.call(ENCLAVE_STATUS, pb.EnclaveStatusRequest(Name="e1")))
        await self.fails(ErrEnclaveNotFound, self.call(KEY_STATUS, pb.KeyStatusRequest(Name="k"), "e1"))
        await self.fails(ErrEnclaveNotFound, self.call(ENCLAVE_DELETE, pb.DeleteEnclaveRequest(Name="e1")))
        await self.fails(
            ErrPermission, self.call(KEY_STATUS, pb.KeyStatusRequest(Name="k"), "e1", client=self.client(admin))
        )
        # a new enclave of the same name starts empty
        await self.enclave("e1")
        await self.fails(ErrKeyNotFound, self.call(KEY_STATUS, pb.KeyStatusRequest(Name="k"), "e1"))
        await self.fails(
            ErrKeyNotFound, self.call(KEY_DECRYPT, pb.DecryptRequest(Name="k", Ciphertext=sealed.Ciphertext), "e1")
        )
        await self.fails(ErrPolicyNotFound, self.call(POLICY_GET, pb.PolicyRequest(Name="p"), "e1"))
        await self.fails(
            ErrIdentityNotFound, self.call(IDENTITY_STATUS, pb.IdentityRequest(Identity=admin.identity), "e1")
        )
        await self.fails(ErrPermission, self.call(KEY_LIST, pb.ListRequest(), "e1", client=self.client(admin)))


# --- 21. Raw probes ------------------------------------------------------------


class RawProbeTests(ServerTestCase):
    """
    Item 21: C{/v1/kms} and C{/v1/kms/} both name no enclave; every reply
    has a Content-Length and no Content-Encoding even when gzip is offered;
    a write answers one zero-length frame; errors are C{application/json}
    with exactly C{{"message": ...}}; unknown paths 404, wrong methods 405.
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")
        await self.key("k")

    async def test_kms_with_and_without_slash(self):
        raw = self.raw()
        for path in ("/v1/kms", "/v1/kms/"):
            response = await raw.kms(frame(CLUSTER_STATUS), path=path)
            self.assertOK(response)
            [status] = decode_frames(CLUSTER_STATUS, response.body)
            self.assertEqual(status.NodesUp[0].Host, self.server.host)
            response = await raw.kms(body_of(KEY_STATUS, pb.KeyStatusRequest(Name="k")), path=path)
            self.assertError(response, 400, "KEY:STATUS needs an enclave: send it to /v1/kms/ENCLAVE")
        response = await raw.kms(body_of(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e2")), path="/v1/kms/")
        self.assertOK(response)
        self.assertEqual(response.body, frames.zero_frame(ENCLAVE_CREATE))

    async def test_writes_answer_zero_length_frames(self):
        raw = self.raw()
        writes = [
            (KEY_CREATE, "e1", pb.CreateKeyRequest(Name="k2")),
            (KEY_CREATE, "e1", pb.CreateKeyRequest(Name="k2", AddVersion=True)),
            (KEY_IMPORT, "e1", pb.ImportKeyRequest(Name="k3", Key=os.urandom(32))),
            (KEY_DELETE, "e1", pb.DeleteKeyRequest(Name="k3")),
            (POLICY_CREATE, "e1", pb.CreatePolicyRequest(Name="p")),
            (IDENTITY_CREATE, "e1", pb.CreateIdentityRequest(Identity=APIKey.parse(generate_api_key()).identity)),
            (POLICY_DELETE, "e1", pb.DeletePolicyRequest(Name="p")),
            (ENCLAVE_CREATE, "", pb.CreateEnclaveRequest(Name="e2")),
            (ENCLAVE_DELETE, "", pb.DeleteEnclaveRequest(Name="e2")),
        ]
        for code, enclave, message in writes:
            response = await raw.kms(body_of(code, message), enclave)
            self.assertOK(response)
            self.assertEqual(response.body, struct.pack(">HI", code, 0), code)

    async def test_content_length_never_encoded(self):
        """200s and errors alike: Content-Length, no Content-Encoding, no chunking."""
        raw = self.raw()
        stranger = self.raw(generate_api_key())
        probes = [
            (raw, "GET", "/version", None, 200),
            (raw, "GET", "/v1/health/live", None, 200),
            (raw, "GET", "/v1/health/ready?write", None, 200),
            (raw, "POST", "/v1/kms", frame(CLUSTER_STATUS), 200),
            (raw, "POST", "/v1/kms/e1", body_of(KEY_GENERATE, pb.GenerateKeyRequest(Name="k", Length=1024)), 200),
            (raw, "POST", "/v1/kms/e1", body_of(KEY_LIST, pb.ListRequest()), 200),
            (raw, "POST", "/v1/kms/e1", body_of(KEY_CREATE, pb.CreateKeyRequest(Name="new")), 200),
            (raw, "POST", "/v1/kms/e1", body_of(KEY_STATUS, pb.KeyStatusRequest(Name="nope")), 404),
            (raw, "POST", "/v1/kms/e1", body_of(KEY_CREATE, pb.CreateKeyRequest(Name="k")), 409),
            (raw, "POST", "/v1/kms", unhex("00 03 00"), 400),
            (stranger, "POST", "/v1/kms", frame(CLUSTER_STATUS), 403),
            (raw, "GET", "/v1/nope", None, 404),
            (raw, "GET", "/v1/kms", None, 405),
        ]
        for client, method, path, body, status in probes:
            response = await client.request(method, path, body)
            where = f"{method} {path} -> {response.status}"
            self.assertEqual(response.status, status, where)
            self.assertEqual(response.header("content-length"), str(len(response.body)), where)
            self.assertEqual(response.all("content-encoding"), [], where)
            self.assertIsNone(response.header("transfer-encoding"), where)

    async def test_error_bodies(self):
        raw = self.raw()
        cases = [
            (body_of(KEY_STATUS, pb.KeyStatusRequest(Name="nope")), "e1", ErrKeyNotFound),
            (body_of(KEY_CREATE, pb.CreateKeyRequest(Name="k")), "e1", ErrKeyExists),
            (body_of(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e1")), "", ErrEnclaveExists),
            (body_of(ENCLAVE_STATUS, pb.EnclaveStatusRequest(Name="e9")), "", ErrEnclaveNotFound),
            (body_of(POLICY_GET, pb.PolicyRequest(Name="nope")), "e1", ErrPolicyNotFound),
            (
                body_of(IDENTITY_STATUS, pb.IdentityRequest(Identity=APIKey.parse(generate_api_key()).identity)),
                "e1",
                ErrIdentityNotFound,
            ),
            (body_of(KEY_DECRYPT, pb.DecryptRequest(Name="k", Ciphertext=b"\x01garbage")), "e1", ErrDecrypt),
        ]
        for body, enclave, error in cases:
            response = await raw.kms(body, enclave)
            self.assertError(response, error.status, error.message)
            self.assertEqual(response.body, json.dumps({"message": error.message}, separators=(",", ":")).encode())
        response = await self.raw(None).kms(frame(CLUSTER_STATUS))
        self.assertError(response, 403, "access denied: insufficient permissions")

    async def test_unknown_path(self):
        raw = self.raw()
        for path in ("/v1/nope", "/v2/kms", "/v1/kms-x", "/v1/health/dead", "/nope", "/version/x", "/v1/health/live/x"):
            for method in ("GET", "POST"):
                response = await raw.request(method, path, b"" if method == "POST" else None)
                self.assertError(response, 404, "no such API endpoint")

    async def test_wrong_method(self):
        raw = self.raw()
        for method, path in (
            ("GET", "/v1/kms"),
            ("PUT", "/v1/kms/e1"),
            ("DELETE", "/v1/kms"),
            ("POST", "/version"),
            ("POST", "/v1/health/live"),
            ("PUT", "/v1/health/ready"),
        ):
            response = await raw.request(method, path, b"" if method != "GET" else None)
            self.assertError(response, 405, f"method {method} not allowed")

    async def test_enclave_path_percent_decoded_once(self):
        """
        Spec 4.1: the client percent-encodes the enclave segment, the server
        decodes it (once).  A name holding C{%} or non-ASCII letters must
        reach its own enclave.
        """
        wrong = []
        for name in ("tenant-a+b", "e%41", "100%", "café"):
            await self.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=name))
            try:
                await self.call(KEY_CREATE, pb.CreateKeyRequest(Name="k"), name)
                [status] = await self.send(KEY_STATUS, [pb.KeyStatusRequest(Name="k")], name)
                self.assertEqual(status.Name, "k")
            except KMSError as e:
                wrong.append((name, "/v1/kms/" + quote(name, safe=""), e))
        self.assertEqual(wrong, [])
