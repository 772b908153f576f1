"""
API keys (C{k1:}, C{k2:}), identities (C{h1:}) and API-key certificates,
as defined by C{aead.dev/mtls} v0.2.1 and used by kms-go (spec section 2).

An identity is the SHA-256 of the DER SubjectPublicKeyInfo of a client
certificate's public key; an API key is a private key whose self-signed
certificate a client presents in the TLS handshake.
"""

import base64
import binascii
import datetime
import functools
import hashlib
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

K1 = "k1:"
K2 = "k2:"
H1 = "h1:"

_CURVES = {32: ec.SECP256R1(), 48: ec.SECP384R1(), 66: ec.SECP521R1()}
_HASHES = {32: hashes.SHA256, 48: hashes.SHA384, 66: hashes.SHA512}


class APIKeyError(ValueError):
    """The text given as an API key or identity is not one."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if "=" in text:
        raise ValueError("padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def api_key_from_seed(seed: bytes) -> str:
    """The C{k1:} text of an Ed25519 private key given by its 32-byte seed."""
    if len(seed) != 32:
        raise APIKeyError("an Ed25519 seed is 32 bytes")
    return K1 + _b64url(seed)


def generate_api_key() -> str:
    """A fresh random C{k1:} API key."""
    return api_key_from_seed(os.urandom(32))


class APIKey:
    """
    A parsed API key: its private key, public key and identity.

    Parse with L{APIKey.parse}; the text form is kept for display.
    """

    def __init__(self, text: str, private_key) -> None:
        self.text = text
        self.private_key = private_key
        self.identity = identity_of_public_key(private_key.public_key())

    @classmethod
    def parse(cls, text: str) -> "APIKey":
        """
        Parse a C{k1:} or C{k2:} API key.

        @raise APIKeyError: with a one-line reason when malformed.
        """
        text = text.strip()
        if text.startswith(K1):
            try:
                seed = _unb64url(text[3:])
            except (binascii.Error, ValueError):
                raise APIKeyError("invalid API key: not base64url") from None
            if len(seed) != 32:
                raise APIKeyError("invalid API key: wrong length")
            key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
            return cls(text, key)
        if text.startswith(K2):
            try:
                scalar = _unb64url(text[3:])
            except (binascii.Error, ValueError):
                raise APIKeyError("invalid API key: not base64url") from None
            curve = _CURVES.get(len(scalar))
            if curve is None:
                raise APIKeyError("invalid API key: wrong length")
            try:
                key = ec.derive_private_key(int.from_bytes(scalar, "big"), curve)
            except ValueError:
                raise APIKeyError("invalid API key: bad scalar") from None
            return cls(text, key)
        raise APIKeyError("invalid API key: must start with 'k1:' or 'k2:'")

    def certificate(self, now: datetime.datetime | None = None) -> x509.Certificate:
        """
        The self-signed client certificate kms-go builds from an API key
        (spec section 1.4): CN = identity, 90 days from now, clientAuth.
        """
        return self_signed_certificate(self.private_key, self.identity, now=now, client=True)


def self_signed_certificate(
    private_key,
    common_name: str,
    now: datetime.datetime | None = None,
    client: bool = True,
    dns_names: tuple = (),
    ip_addresses: tuple = (),
    days: int = 90,
) -> x509.Certificate:
    """
    A self-signed certificate for C{private_key}: an API-key client
    certificate (C{client=True}) or a server certificate with SANs.
    """
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(int.from_bytes(os.urandom(16), "big"))
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    sans = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(a) for a in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        algorithm = None
    else:
        algorithm = _HASHES[(private_key.curve.key_size + 7) // 8]()
    return builder.sign(private_key, algorithm)


def identity_of_spki(spki: bytes) -> str:
    """C{h1:} + base64url-raw(SHA-256(DER SubjectPublicKeyInfo))."""
    return H1 + _b64url(hashlib.sha256(spki).digest())


def identity_of_public_key(public_key) -> str:
    """The identity of a public key in its canonical SubjectPublicKeyInfo form."""
    return identity_of_spki(
        public_key.public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )


def _der_element(data: bytes, pos: int) -> tuple[int, int]:
    """Where the content of the DER element at C{pos} starts, and where the element ends."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER element")
    first = data[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        size = first & 0x7F
        start = pos + 2 + size
        length = int.from_bytes(data[pos + 2 : start], "big")
    if start + length > len(data):
        raise ValueError("DER element runs past its container")
    return start, start + length


def raw_subject_public_key_info(certificate: x509.Certificate) -> bytes:
    """
    The SubjectPublicKeyInfo element exactly as it appears in the
    certificate (Go's C{RawSubjectPublicKeyInfo}, spec section 1.5), not
    re-encoded: re-encoding changes RSA-PSS and compressed-point EC keys.
    """
    der = certificate.public_bytes(serialization.Encoding.DER)
    tbs, _ = _der_element(der, 0)
    pos, tbs_end = _der_element(der, tbs)
    if der[pos] == 0xA0:
        pos = _der_element(der, pos)[1]
    for _ in range(5):
        pos = _der_element(der, pos)[1]
    end = _der_element(der, pos)[1]
    if end > tbs_end:
        raise ValueError("SubjectPublicKeyInfo runs past the TBSCertificate")
    return der[pos:end]


def identity_of_certificate(certificate: x509.Certificate) -> str:
    """
    The identity of a (leaf) certificate: the hash of its
    SubjectPublicKeyInfo as sent.
    """
    return identity_of_spki(raw_subject_public_key_info(certificate))


@functools.lru_cache(maxsize=4096)
def is_identity(text: str) -> bool:
    """Whether C{text} is a well-formed C{h1:} identity (cached: checked on every request)."""
    if not text.startswith(H1) or len(text) != 46:
        return False
    try:
        return len(_unb64url(text[3:])) == 32
    except (binascii.Error, ValueError):
        return False
