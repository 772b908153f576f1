"""The software HSM: key format, derivations and sealing."""

import base64

from twisted.trial import unittest

from minkms.apikey import APIKey
from minkms.errors import ErrDecrypt, KMSError
from minkms.hsm import HSMKeyError, SoftHSM, unseal_error_text

FIXED = "hsm:aes256:" + base64.b64encode(bytes(range(32))).decode()


class SoftHSMTests(unittest.TestCase):
    def test_format(self):
        """A new key is hsm:aes256: and the standard base64 of 32 bytes."""
        text = SoftHSM.generate().to_text()
        self.assertTrue(text.startswith("hsm:aes256:"))
        self.assertEqual(len(base64.b64decode(text[11:], validate=True)), 32)
        self.assertEqual(SoftHSM.parse(text).to_text(), text)

    def test_malformed(self):
        """Malformed keys are refused with a one-line reason."""
        for bad in [
            "",
            "hsm:aes128:AAAA",
            "hsm:aes256:not base64!",
            "hsm:aes256:AAAA",
            "k1:AqwjUvaWEE9O83quGOkiO_2D1x37Za9gE4L5UHdq0Ag",
        ]:
            with self.assertRaises(HSMKeyError) as e:
                SoftHSM.parse(bad)
            self.assertNotIn("\n", str(e.exception))

    def test_derivations_are_fixed(self):
        """The same HSM key gives the same SysAdmin key on every node, and
        the peer key differs from it."""
        a, b = SoftHSM.parse(FIXED), SoftHSM.parse(FIXED)
        self.assertEqual(a.sysadmin_api_key(), b.sysadmin_api_key())
        self.assertNotEqual(a.sysadmin_api_key(), a.peer_api_key())
        APIKey.parse(a.sysadmin_api_key())
        other = SoftHSM.generate()
        self.assertNotEqual(other.sysadmin_api_key(), a.sysadmin_api_key())

    def test_seal(self):
        """Sealed data opens only with the same key and associated data."""
        hsm = SoftHSM.parse(FIXED)
        sealed = hsm.seal(b"root key", b"header")
        self.assertEqual(hsm.unseal(sealed, b"header"), b"root key")
        self.assertRaises(KMSError, hsm.unseal, sealed, b"other")
        self.assertRaises(KMSError, SoftHSM.generate().unseal, sealed, b"header")
        with self.assertRaises(KMSError) as e:
            hsm.unseal(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"header")
        self.assertEqual(
            unseal_error_text(e.exception),
            "failed to unseal root encryption key with HSM: invalid ciphertext",
        )
        self.assertEqual(e.exception, ErrDecrypt)
