"""
Client certificates beyond the API-key ones kms-go builds (spec 1.3-1.5):
the server accepts any certificate, self-signed, expired or not yet valid,
any key algorithm, and identifies the caller by the hash of the leaf's
public key only, never by its names.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from minkms.apikey import APIKey, generate_api_key, self_signed_certificate
from minkms.wire import kms_pb2 as pb
from tests.test_conformance import (
    CLUSTER_STATUS,
    IDENTITY_CREATE,
    IDENTITY_STATUS,
    PRIV_ADMIN,
    ServerTestCase,
    body_of,
    decode_frames,
    frame,
    spki_identity,
)

NOW = datetime.datetime.now(datetime.timezone.utc)


def certificate(key, common_name="client", now=NOW, days=90, ca=False, issuer=None, issuer_key=None):
    """A client certificate; self-signed unless an issuer is given."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key or key, hashes.SHA256())


class ClientCertificateTests(ServerTestCase):
    """
    Whatever certificate a client presents, the handshake succeeds and the
    caller is C{h1:} + base64url(SHA-256(SPKI of the leaf)).
    """

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")

    async def identified_as(self, chain, key):
        """Register the leaf's identity as Admin; return what the server sees."""
        expected = spki_identity(chain[0])
        await self.call(IDENTITY_CREATE, pb.CreateIdentityRequest(Identity=expected, Privilege="Admin"), "e1")
        response = await self.raw((chain, key)).kms(body_of(IDENTITY_STATUS, pb.IdentityRequest()), "e1")
        self.assertOK(response)
        [me] = decode_frames(IDENTITY_STATUS, response.body)
        self.assertEqual(me.Privilege, PRIV_ADMIN)
        return expected, me.Identity

    async def test_rsa_certificate(self):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        expected, seen = await self.identified_as([certificate(key)], key)
        self.assertEqual(seen, expected)

    async def test_p384_certificate(self):
        key = ec.generate_private_key(ec.SECP384R1())
        expected, seen = await self.identified_as([certificate(key)], key)
        self.assertEqual(seen, expected)

    async def test_expired_certificate(self):
        key = ec.generate_private_key(ec.SECP256R1())
        old = certificate(key, now=NOW - datetime.timedelta(days=400), days=90)
        expected, seen = await self.identified_as([old], key)
        self.assertEqual(seen, expected)

    async def test_not_yet_valid_certificate(self):
        """kms-go stamps notBefore with the client's clock, which may run ahead."""
        key = APIKey.parse(generate_api_key())
        ahead = key.certificate(now=NOW + datetime.timedelta(days=2))
        expected, seen = await self.identified_as([ahead], key.private_key)
        self.assertEqual(seen, key.identity)
        self.assertEqual(expected, key.identity)

    async def test_ca_certificate(self):
        key = ec.generate_private_key(ec.SECP256R1())
        expected, seen = await self.identified_as([certificate(key, ca=True)], key)
        self.assertEqual(seen, expected)

    async def test_chain_only_leaf_counts(self):
        """A leaf issued by a CA, sent with the CA: the identity is the leaf's."""
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = certificate(ca_key, "issuer", ca=True)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = certificate(leaf_key, "leaf", issuer=ca.subject, issuer_key=ca_key)
        expected, seen = await self.identified_as([leaf, ca], leaf_key)
        self.assertEqual(seen, expected)
        self.assertNotEqual(seen, spki_identity(ca))

    async def test_common_name_is_not_identity(self):
        """A certificate whose CN is the SysAdmin's identity is not the SysAdmin."""
        key = APIKey.parse(generate_api_key())
        forged = self_signed_certificate(key.private_key, self.root_identity, client=True)
        response = await self.raw(([forged], key.private_key)).kms(frame(CLUSTER_STATUS))
        self.assertError(response, 403, "access denied: insufficient permissions")
        response = await self.raw().kms(frame(CLUSTER_STATUS))
        self.assertOK(response)
