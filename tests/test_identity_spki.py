"""
Spec 1.5: a client's identity is the SHA-256 of its certificate's
SubjectPublicKeyInfo exactly as sent (Go's C{RawSubjectPublicKeyInfo}).
Re-encoding the public key gives other bytes for RSA-PSS keys and for EC
keys sent with a compressed point, so those clients would get another
identity than kms-go and MinIO compute for them (issue 11, item 6).

The certificates here are built by re-writing the SubjectPublicKeyInfo of
a normal certificate and signing the new TBSCertificate, with a DER writer
of a few lines; the expected identity is the hash of the bytes put in.
"""

import base64
import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from twisted.trial import unittest

from minkms.apikey import identity_of_certificate
from minkms.wire import kms_pb2 as pb
from tests.test_conformance import IDENTITY_CREATE, IDENTITY_STATUS, ServerTestCase, body_of, decode_frames

RSASSA_PSS = bytes.fromhex("06092a864886f70d01010a")


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def elements(data: bytes) -> list[bytes]:
    """The DER elements laid end to end in C{data}, each whole."""
    out, pos = [], 0
    while pos < len(data):
        first = data[pos + 1]
        if first < 0x80:
            start, length = pos + 2, first
        else:
            start = pos + 2 + (first & 0x7F)
            length = int.from_bytes(data[pos + 2 : start], "big")
        out.append(data[pos : start + length])
        pos = start + length
    return out


def content(element: bytes) -> bytes:
    """The content octets of one whole DER element."""
    first = element[1]
    return element[2:] if first < 0x80 else element[2 + (first & 0x7F) :]


def plain_certificate(key) -> x509.Certificate:
    """A self-signed client certificate for an EC or RSA key, signed with SHA-256."""
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def with_spki(certificate: x509.Certificate, spki: bytes, sign) -> x509.Certificate:
    """C{certificate} with its SubjectPublicKeyInfo replaced, re-signed by C{sign}."""
    tbs, algorithm, _ = elements(content(certificate.public_bytes(serialization.Encoding.DER)))
    fields = elements(content(tbs))
    fields[5 + (fields[0][0] == 0xA0)] = spki
    new_tbs = tlv(0x30, b"".join(fields))
    signature = tlv(0x03, b"\0" + sign(new_tbs))
    return x509.load_der_x509_certificate(tlv(0x30, new_tbs + algorithm + signature))


def h1(spki: bytes) -> str:
    return "h1:" + base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=").decode()


def compressed_ec_client():
    """A P-256 client certificate whose key is sent as a compressed point."""
    key = ec.generate_private_key(ec.SECP256R1())
    canonical = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    algorithm, _ = elements(content(canonical))
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    spki = tlv(0x30, algorithm + tlv(0x03, b"\0" + point))
    cert = with_spki(plain_certificate(key), spki, lambda tbs: key.sign(tbs, ec.ECDSA(hashes.SHA256())))
    return cert, key, spki, canonical


def rsa_pss_client():
    """An RSA certificate whose key is marked id-RSASSA-PSS (RFC 4055)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    canonical = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, bits = elements(content(canonical))
    spki = tlv(0x30, tlv(0x30, RSASSA_PSS) + bits)
    cert = with_spki(plain_certificate(key), spki, lambda tbs: key.sign(tbs, padding.PKCS1v15(), hashes.SHA256()))
    return cert, key, spki, canonical


class RawSPKITests(unittest.TestCase):
    """The identity hashes the bytes the certificate carries."""

    def test_compressed_point(self):
        cert, _, spki, canonical = compressed_ec_client()
        self.assertNotEqual(spki, canonical)
        self.assertEqual(identity_of_certificate(cert), h1(spki))

    def test_rsa_pss(self):
        cert, _, spki, canonical = rsa_pss_client()
        self.assertNotEqual(spki, canonical)
        self.assertEqual(identity_of_certificate(cert), h1(spki))

    def test_ordinary_keys_unchanged(self):
        for key in (
            ec.generate_private_key(ec.SECP384R1()),
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ):
            spki = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.assertEqual(identity_of_certificate(plain_certificate(key)), h1(spki))


class HandshakeIdentityTests(ServerTestCase):
    """Over real TLS, the node names a compressed-point client as kms-go would."""

    async def test_compressed_point_client(self):
        await self.enclave("e1")
        cert, key, spki, _ = compressed_ec_client()
        await self.call(IDENTITY_CREATE, pb.CreateIdentityRequest(Identity=h1(spki)), "e1")
        response = await self.raw(([cert], key)).kms(body_of(IDENTITY_STATUS, pb.IdentityRequest(Identity="")), "e1")
        self.assertOK(response)
        [me] = decode_frames(IDENTITY_STATUS, response.body)
        self.assertEqual(me.Identity, h1(spki))
