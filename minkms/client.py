"""
A minkms client, shared by the C{minkms} CLI and the tests.

It speaks what kms-go speaks: HTTPS with the API key's self-signed
certificate as client certificate, framed commands on C{/v1/kms}, JSON or
protobuf error bodies.  Servers come from C{MINIO_KMS_SERVER} (a comma
list; the next one is tried when one cannot be reached), the key from
C{MINIO_KMS_API_KEY}.
"""

import io
import os
from urllib.parse import quote

from cryptography import x509
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error as ierror
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.web import client as webclient
from twisted.web.http_headers import Headers
from zope.interface import implementer

from minkms.apikey import APIKey, APIKeyError
from minkms.tls import ClientTLS
from minkms.wire import errors as wire_errors, frames
from minkms.wire.commands import BY_CODE

DEFAULT_SERVER = "https://localhost:7373"
OCTET_STREAM = b"application/octet-stream"


class ClientError(Exception):
    """A problem on the client side: bad settings, or no server reachable."""


def parse_servers(text: str) -> list[str]:
    """C{MINIO_KMS_SERVER}'s comma list as C{host:port} endpoints."""
    servers = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.lower().startswith("http://"):
            raise ClientError(f"{item}: minkms serves HTTPS only: use https://{item[len('http://') :]}")
        if item.lower().startswith("https://"):
            item = item[len("https://") :]
        item = item.rstrip("/")
        if ":" not in item.rsplit("]", 1)[-1]:
            item += ":7373"
        servers.append(item)
    if not servers:
        raise ClientError("no server: set MINIO_KMS_SERVER, e.g. https://localhost:7373")
    return servers


def load_api_key(text: str | None) -> APIKey | None:
    """Parse an API key given on the command line or in the environment."""
    if not text:
        return None
    try:
        return APIKey.parse(text)
    except APIKeyError as e:
        raise ClientError(str(e)) from None


_TRANSPORT_ERRORS = (
    ierror.ConnectError,
    ierror.DNSLookupError,
    ierror.ConnectionLost,
    ierror.ConnectionClosed,
    ierror.TimeoutError,
    webclient.ResponseNeverReceived,
    webclient.RequestTransmissionFailed,
    webclient.ResponseFailed,
    VerificationError,
    SSL.Error,
)
UNTRUSTED = (
    "certificate is not signed by a trusted CA: pass --cacert FILE, set SSL_CERT_FILE, "
    "or use -k for a self-signed certificate"
)


def _root_cause(error):
    """The first underlying error of Twisted's wrappers (and Failures)."""
    while True:
        error = getattr(error, "value", error)
        reasons = getattr(error, "reasons", None)
        if not reasons or not isinstance(
            error, (webclient.ResponseNeverReceived, webclient.RequestTransmissionFailed, webclient.ResponseFailed)
        ):
            return error
        error = reasons[0]


def network_reason(error) -> str:
    """
    Why a connection failed, in words a person reads (C{connection
    refused}, C{no such host}, C{timed out}), never a Python repr.
    """
    e = _root_cause(error)
    if isinstance(e, ierror.ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ierror.DNSLookupError):
        return "no such host"
    if isinstance(e, (ierror.TimeoutError, defer.CancelledError, defer.TimeoutError)):
        return "timed out"
    if isinstance(e, ierror.NoRouteError):
        return "no route to host"
    if isinstance(e, (ierror.ConnectionLost, ierror.ConnectionDone, ierror.ConnectionClosed)):
        return "connection closed by the server"
    if isinstance(e, VerificationError):
        return "certificate does not match the host name"
    text = str(e).strip()
    if "certificate verify failed" in text or "CERTIFICATE_VERIFY_FAILED" in text:
        return UNTRUSTED
    if isinstance(e, SSL.Error):
        return "TLS handshake failed"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return text.splitlines()[0] if text else type(e).__name__


@implementer(IHandshakeListener)
class _CertificateGrab(Protocol):
    """Reads the server's certificate after the handshake, then hangs up."""

    def __init__(self) -> None:
        self.certificate = defer.Deferred()

    def handshakeCompleted(self):
        cert = self.transport.getPeerCertificate()
        self.certificate.callback(cert.to_cryptography() if cert is not None else None)
        self.transport.abortConnection()

    def connectionLost(self, reason):
        if not self.certificate.called:
            self.certificate.callback(None)


async def certificate_names(reactor, host: str, port: int, timeout: float) -> list[str]:
    """
    The DNS names and IP addresses the certificate of C{host:port} is for,
    read without verifying it (only to say why verification failed).
    """
    endpoint = wrapClientTLS(
        ClientTLS(None, insecure=True).creatorForNetloc(host.encode("idna"), port),
        HostnameEndpoint(reactor, host, port, timeout=timeout),
    )
    try:
        protocol = await endpoint.connect(Factory.forProtocol(_CertificateGrab))
        cert = await protocol.certificate
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:
        return []
    return [str(n) for n in sans.get_values_for_type(x509.DNSName)] + [
        str(n) for n in sans.get_values_for_type(x509.IPAddress)
    ]


class KMSClient:
    """
    An asynchronous client for one cluster.

    @ivar servers: C{host:port} endpoints, tried in order on transport errors.
    """

    def __init__(
        self,
        reactor,
        servers,
        api_key: APIKey | None = None,
        insecure=False,
        ca_certificates=None,
        timeout: float = 30.0,
    ) -> None:
        self.servers = list(servers)
        self.api_key = api_key
        self._reactor = reactor
        self._pool = webclient.HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 16
        self._agent = webclient.Agent(
            reactor,
            contextFactory=ClientTLS(api_key, insecure=insecure, ca_certificates=ca_certificates),
            connectTimeout=timeout,
            pool=self._pool,
        )
        self._timeout = timeout

    @classmethod
    def from_environment(
        cls,
        reactor,
        api_key: str | None = None,
        insecure=False,
        servers: str | None = None,
        environ=os.environ,
        ca_certificates=None,
    ) -> "KMSClient":
        """A client configured like the C{minkms} CLI: flags, then environment."""
        if servers is None:
            servers = environ.get("MINIO_KMS_SERVER", DEFAULT_SERVER)
            if not servers.strip():
                raise ClientError(f"MINIO_KMS_SERVER is empty: set it to the server's URL, e.g. {DEFAULT_SERVER}")
        key = api_key if api_key is not None else environ.get("MINIO_KMS_API_KEY")
        return cls(
            reactor, parse_servers(servers), load_api_key(key), insecure=insecure, ca_certificates=ca_certificates
        )

    def close(self):
        """Close idle connections (a Deferred)."""
        return self._pool.closeCachedConnections()

    async def request(
        self,
        method: bytes,
        path: str,
        body: bytes | None = None,
        host: str | None = None,
        accept: bytes = b"application/*",
        timeout: float | None = None,
    ):
        """
        Send one request; on a transport error try the next server (unless
        C{host} pins one).  C{timeout} overrides the client's for this call.

        @return: C{(status, content_type, body)}.
        @raise ClientError: when no server could be reached.
        """
        targets = [host] if host else self.servers
        errors = []
        for target in targets:
            url = f"https://{target}{path}".encode()
            headers = Headers({b"accept": [accept]})
            producer = None
            if body is not None:
                headers.addRawHeader(b"content-type", OCTET_STREAM)
                producer = webclient.FileBodyProducer(io.BytesIO(body))
            try:
                d = self._agent.request(method, url, headers, producer)
                d.addTimeout(timeout or self._timeout, self._reactor)
                response = await d
                data = await webclient.readBody(response)
            except _TRANSPORT_ERRORS as e:
                errors.append(f"https://{target}: {await self._why(target, e)}")
                continue
            except defer.CancelledError:
                errors.append(f"https://{target}: timed out")
                continue
            ctype = response.headers.getRawHeaders(b"content-type", [b""])[0]
            return response.code, ctype, data
        raise ClientError("cannot reach " + "; ".join(errors))

    async def stream(self, method: bytes, path: str, body: bytes, deliver, host: str | None = None):
        """
        Send one request and hand each piece of a 200 response's body to
        C{deliver(bytes)} as it arrives; returns when the server ends it
        (cancel the coroutine's Deferred to hang up).

        @raise KMSError: the server's error for a non-200 status.
        """
        target = host or self.servers[0]
        headers = Headers({b"accept": [OCTET_STREAM], b"content-type": [OCTET_STREAM]})
        producer = webclient.FileBodyProducer(io.BytesIO(body))
        try:
            response = await self._agent.request(method, f"https://{target}{path}".encode(), headers, producer)
        except _TRANSPORT_ERRORS as e:
            raise ClientError(f"cannot reach https://{target}: {await self._why(target, e)}") from None
        if response.code != 200:
            data = await webclient.readBody(response)
            ctype = response.headers.getRawHeaders(b"content-type", [b""])[0]
            raise wire_errors.parse_error(response.code, ctype.decode("latin-1"), data)
        delivery = _Delivery(deliver)
        response.deliverBody(delivery)
        await delivery.done

    async def _why(self, target: str, error) -> str:
        """L{network_reason}, with the names the certificate is for when they do not match."""
        if not isinstance(_root_cause(error), VerificationError):
            return network_reason(error)
        host, _, port = target.rpartition(":")
        names = await certificate_names(self._reactor, host.strip("[]"), int(port), self._timeout)
        if not names:
            return network_reason(error)
        return f"certificate of {host.strip('[]')} is for {', '.join(names)}"

    async def send(
        self, code: int, messages: list, enclave: str = "", host: str | None = None, timeout: float | None = None
    ) -> list:
        """
        Send framed commands and decode the response frames.

        @raise KMSError: the server's error (status and canonical text).
        """
        path = "/v1/kms"
        if enclave:
            path += "/" + quote(enclave, safe="")
        body = frames.encode_request(code, messages)
        status, ctype, data = await self.request(b"POST", path, body, host=host, timeout=timeout)
        if status != 200:
            raise wire_errors.parse_error(status, ctype.decode("latin-1"), data)
        if BY_CODE[code].response is None:
            return []
        return frames.decode_response(code, data)

    async def call(self, code: int, message, enclave: str = "", host: str | None = None, timeout: float | None = None):
        """Send one command and return its one response (or None for writes)."""
        replies = await self.send(code, [message], enclave=enclave, host=host, timeout=timeout)
        return replies[0] if replies else None

    async def get(self, path: str, host: str | None = None, accept: bytes = OCTET_STREAM):
        """A plain C{GET}; raises the server's error on a non-200 status."""
        status, ctype, data = await self.request(b"GET", path, host=host, accept=accept)
        if status != 200:
            raise wire_errors.parse_error(status, ctype.decode("latin-1"), data)
        return data


class _Delivery(Protocol):
    """Hands a response body to a callable piece by piece."""

    def __init__(self, deliver) -> None:
        self._deliver = deliver
        self.done = defer.Deferred(lambda _: self.transport.stopProducing())
        """Fires when the body ends; cancelling it closes the connection."""

    def dataReceived(self, data: bytes) -> None:
        self._deliver(data)

    def connectionLost(self, reason) -> None:
        if not self.done.called:
            self.done.callback(None)
