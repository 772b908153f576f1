"""
TLS contexts for both ends of a minkms connection (spec sections 1.3-1.5).

The server asks every client for a certificate and accepts any one: the
caller's identity is the hash of its public key, and authorization happens
later from that identity.  Clients present the self-signed certificate of
their API key.  One listener serves both the HTTP API and the peer channel;
ALPN C{minkms-raft/1} selects the peer channel (DESIGN decision 1).
"""

import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLContextFactory
from twisted.logger import Logger
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from minkms.apikey import APIKey, identity_of_certificate

ALPN_PEER = b"minkms-raft/1"
ALPN_HTTP = b"http/1.1"
PEER_SERVER_NAME = "peer.minkms.invalid"
"""The SNI a node sends to another node: the listener then answers with
the peer certificate derived from the HSM key instead of its own."""

_SESSION_ID = b"minkms"


class TLSConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the text says which."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(f"cannot read {what} {path}: {e.strerror}") from None


def load_certificate_chain(cert_path: str) -> list[x509.Certificate]:
    """The PEM certificates of C{cert_path}, leaf first."""
    data = _read(cert_path, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(f"invalid certificate {cert_path}: not a PEM certificate") from None
    return chain


def load_private_key(key_path: str):
    """The PEM private key in C{key_path} (unencrypted)."""
    data = _read(key_path, "private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise TLSConfigError(f"invalid private key {key_path}: not an unencrypted PEM key") from None


def load_ca_directory(path: str, warn=None) -> list[x509.Certificate]:
    """
    Every PEM certificate in a CA file or in the files of a CA directory.
    A file in a directory that holds no certificate (openssl's C{ca.srl}
    lands there by default) is skipped with a C{warn(line)}, as Go's
    certificate pool does; a directory whose files hold no certificate at
    all fails (an empty one is no error).
    """
    if warn is None:
        warn = _log_warning
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise TLSConfigError(f"cannot read CA directory {path}: {e.strerror}") from None
        files = [os.path.join(path, n) for n in names]
        files = [f for f in files if os.path.isfile(f)]
    elif os.path.exists(path):
        files = [path]
    else:
        raise TLSConfigError(f"cannot read CA directory {path}: no such file or directory")
    certs, skipped = [], []
    for name in files:
        try:
            certs.extend(x509.load_pem_x509_certificates(_read(name, "CA certificate")))
        except ValueError:
            if name == path:
                raise TLSConfigError(f"invalid CA certificate {name}: not PEM") from None
            skipped.append(name)
    if skipped and not certs:
        raise TLSConfigError(f"no CA certificate found in {path}: {', '.join(skipped)} not PEM")
    for name in skipped:
        warn(f"skipped {name} in CA directory {path}: not a PEM certificate")
    return certs


def _log_warning(line: str) -> None:
    Logger().warn("{line}", line=line)


class ServerCredentials:
    """
    A server certificate chain with its private key, checked to match.

    @ivar names: the DNS names of the leaf's SAN, for SNI selection.
    """

    def __init__(self, chain: list[x509.Certificate], key) -> None:
        leaf_pub = (
            chain[0]
            .public_key()
            .public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
        key_pub = key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        if leaf_pub != key_pub:
            raise TLSConfigError("private key does not match the certificate")
        self.chain = chain
        self.key = key
        try:
            san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
            self.names = [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            self.names = []

    @classmethod
    def from_files(cls, cert_path: str, key_path: str) -> "ServerCredentials":
        """Load and check a C{cert}/C{key} pair of the config file."""
        chain = load_certificate_chain(cert_path)
        key = load_private_key(key_path)
        try:
            return cls(chain, key)
        except TLSConfigError as e:
            raise TLSConfigError(f"{key_path}: {e}") from None

    def matches(self, server_name: str) -> bool:
        """Whether this certificate is meant for the SNI C{server_name}."""
        server_name = server_name.lower()
        for name in self.names:
            if name == server_name:
                return True
            if name.startswith("*.") and server_name.split(".", 1)[-1] == name[2:]:
                return True
        return False


def _accept_any_certificate(connection, certificate, errno, depth, ok) -> bool:
    return True


TLS12_CIPHERS = b":".join(
    (
        b"ECDHE-ECDSA-AES128-GCM-SHA256",
        b"ECDHE-RSA-AES128-GCM-SHA256",
        b"ECDHE-ECDSA-AES256-GCM-SHA384",
        b"ECDHE-RSA-AES256-GCM-SHA384",
        b"ECDHE-ECDSA-CHACHA20-POLY1305",
        b"ECDHE-RSA-CHACHA20-POLY1305",
    )
)
"""The TLS 1.2 suites a node accepts: forward secret (ECDHE) and AEAD only,
no CBC and no static RSA key exchange.  TLS 1.3 suites are all AEAD and
keep OpenSSL's defaults."""


def _base_context() -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    ctx.set_cipher_list(TLS12_CIPHERS)
    return ctx


def _use_credentials(ctx: SSL.Context, creds: ServerCredentials) -> None:
    ctx.use_certificate(crypto.X509.from_cryptography(creds.chain[0]))
    for extra in creds.chain[1:]:
        ctx.add_extra_chain_cert(crypto.X509.from_cryptography(extra))
    ctx.use_privatekey(crypto.PKey.from_cryptography_key(creds.key))
    ctx.check_privatekey()


def _select_alpn(connection, offered: list[bytes]) -> bytes:
    if ALPN_PEER in offered:
        return ALPN_PEER
    if ALPN_HTTP in offered:
        return ALPN_HTTP
    return SSL.NO_OVERLAPPING_PROTOCOLS


@implementer(IOpenSSLContextFactory)
class ServerContextFactory:
    """
    Builds the server's OpenSSL context: the configured certificate (chosen
    by SNI when there are several), a client certificate requested but any
    accepted, sessions resumable with the peer certificate kept, and ALPN
    choosing between HTTP/1.1 and the peer protocol.  A node connecting to
    this one sends the SNI L{PEER_SERVER_NAME} and gets the peer
    credentials, so that both ends of the peer channel show the peer
    certificate derived from the HSM key.
    """

    def __init__(self, credentials: list[ServerCredentials], peer_credentials: ServerCredentials | None = None) -> None:
        self._peer_context = self._make(peer_credentials) if peer_credentials else None
        self.replace_credentials(credentials)

    def replace_credentials(self, credentials: list[ServerCredentials]) -> None:
        """
        Serve C{credentials} to connections made from now on (a certificate
        reload); open connections keep the context they were made with.
        """
        if not credentials:
            raise TLSConfigError("no server certificate provided")
        contexts = [self._make(c) for c in credentials]
        if len(contexts) > 1 or self._peer_context is not None:
            contexts[0].set_tlsext_servername_callback(self._by_sni)
        self._credentials, self._contexts = credentials, contexts

    def _make(self, creds: ServerCredentials) -> SSL.Context:
        ctx = _base_context()
        _use_credentials(ctx, creds)
        ctx.set_verify(SSL.VERIFY_PEER, _accept_any_certificate)
        ctx.set_session_id(_SESSION_ID)
        ctx.set_alpn_select_callback(_select_alpn)
        return ctx

    def _by_sni(self, connection) -> None:
        name = connection.get_servername()
        if not name:
            return
        name = name.decode("ascii", "replace")
        if name == PEER_SERVER_NAME and self._peer_context is not None:
            connection.set_context(self._peer_context)
            return
        for creds, ctx in zip(self._credentials, self._contexts):
            if creds.matches(name):
                connection.set_context(ctx)
                return

    def getContext(self) -> SSL.Context:
        """The default context (L{twisted.internet.ssl.ContextFactory})."""
        return self._contexts[0]


def peer_identity(transport) -> str:
    """
    The C{h1:} identity of the client certificate on a TLS transport, or
    C{""} when the client sent none: the hash of its SubjectPublicKeyInfo
    as the client sent it (OpenSSL keeps a received certificate's encoding,
    and L{identity_of_certificate} reads the key info from that DER).
    """
    cert = transport.getPeerCertificate()
    if cert is None:
        return ""
    return identity_of_certificate(cert.to_cryptography())


def _private_certificate(api_key: APIKey) -> ssl.PrivateCertificate:
    cert = ssl.Certificate(crypto.X509.from_cryptography(api_key.certificate()))
    key = ssl.KeyPair(crypto.PKey.from_cryptography_key(api_key.private_key))
    return ssl.PrivateCertificate.fromCertificateAndKeyPair(cert, key)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedConnectionCreator:
    """A client connection that does not check the server (C{-k})."""

    def __init__(self, ctx: SSL.Context, hostname: str, alpn: list[bytes]) -> None:
        self._ctx = ctx
        self._hostname = hostname
        self._alpn = alpn

    def clientConnectionForTLS(self, tlsProtocol):
        conn = SSL.Connection(self._ctx, None)
        conn.set_app_data(tlsProtocol)
        conn.set_alpn_protos(self._alpn)
        if not isIPAddress(self._hostname) and not isIPv6Address(self._hostname):
            conn.set_tlsext_host_name(self._hostname.encode("idna"))
        conn.set_connect_state()
        return conn


@implementer(IPolicyForHTTPS)
class ClientTLS:
    """
    Client-side TLS (an L{IPolicyForHTTPS}): presents an API key's
    certificate, and verifies the server against the system trust store or
    the given CA certificates, unless C{insecure} (the CLI's C{-k}, and the
    peer channel, which checks the server's identity itself).
    C{server_name} replaces the host as SNI (unverified connections only).
    """

    def __init__(
        self,
        api_key: APIKey | None,
        insecure: bool = False,
        ca_certificates: list[x509.Certificate] | None = None,
        alpn: tuple[bytes, ...] = (ALPN_HTTP,),
        server_name: str | None = None,
    ) -> None:
        self._insecure = insecure
        self._server_name = server_name
        self._alpn = list(alpn)
        self._client_cert = _private_certificate(api_key) if api_key else None
        if ca_certificates:
            self._trust = ssl.trustRootFromCertificates(
                [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in ca_certificates]
            )
        else:
            self._trust = None
        self._unverified_ctx = None
        if insecure:
            options = ssl.CertificateOptions(
                privateKey=self._client_cert.privateKey.original if api_key else None,
                certificate=self._client_cert.original if api_key else None,
                verify=False,
                acceptableProtocols=self._alpn,
                raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            )
            self._unverified_ctx = options.getContext()

    def creatorForNetloc(self, hostname, port):
        """A connection creator for C{hostname} (L{IPolicyForHTTPS})."""
        host = hostname.decode("ascii") if isinstance(hostname, bytes) else hostname
        host = host.strip("[]")
        if self._unverified_ctx is not None:
            return _UnverifiedConnectionCreator(self._unverified_ctx, self._server_name or host, self._alpn)
        return ssl.optionsForClientTLS(
            host,
            trustRoot=self._trust,
            clientCertificate=self._client_cert,
            acceptableProtocols=self._alpn,
        )
