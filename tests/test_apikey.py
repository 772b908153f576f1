"""API keys and identities against the known answers of kms-go / aead.dev/mtls."""

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial import unittest

from minkms import apikey
from minkms.apikey import APIKey, APIKeyError
from tests.support import read_tsv

SPEC_VECTORS = [
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


class IdentityVectorTests(unittest.TestCase):
    def test_vector_file(self):
        """Every row of api-key-identity.tsv derives exactly its identity."""
        rows = read_tsv("api-key-identity.tsv")
        self.assertGreater(len(rows), 0)
        for row in rows:
            self.assertEqual(APIKey.parse(row["api_key"]).identity, row["identity"])

    def test_spec_table(self):
        """The k1: and k2: (P-256/384/521) rows of spec section 1.5."""
        for key, identity in SPEC_VECTORS:
            self.assertEqual(APIKey.parse(key).identity, identity)

    def test_certificate_identity(self):
        """The client certificate of an API key hashes to the key's identity."""
        key = APIKey.parse(SPEC_VECTORS[0][0])
        cert = key.certificate()
        self.assertEqual(apikey.identity_of_certificate(cert), SPEC_VECTORS[0][1])
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        self.assertEqual(cn, SPEC_VECTORS[0][1])
        eku = cert.extensions.get_extension_for_class(__import__("cryptography").x509.ExtendedKeyUsage)
        self.assertIn(ExtendedKeyUsageOID.CLIENT_AUTH, list(eku.value))

    def test_generated_keys(self):
        """A generated key is a k1: Ed25519 seed that round-trips."""
        text = apikey.generate_api_key()
        self.assertTrue(text.startswith("k1:"))
        self.assertEqual(len(text), 46)
        self.assertIsInstance(APIKey.parse(text).private_key, ed25519.Ed25519PrivateKey)
        self.assertNotEqual(text, apikey.generate_api_key())

    def test_malformed(self):
        """Malformed keys and identities are refused with a reason."""
        for bad in ["", "k3:abc", "k1:abc", "k1:" + "A" * 44, "k2:" + "A" * 10, "hsm:aes256:x"]:
            self.assertRaises(APIKeyError, APIKey.parse, bad)
        self.assertTrue(apikey.is_identity(SPEC_VECTORS[0][1]))
        for bad in ["", "h1:", "h2:" + SPEC_VECTORS[0][1][3:], SPEC_VECTORS[0][1] + "A"]:
            self.assertFalse(apikey.is_identity(bad))
