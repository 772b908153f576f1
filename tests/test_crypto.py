"""Tests for L{minkms.crypto}: ciphertext layout, AEAD binding, DEKs, MACs."""

import struct

from twisted.trial import unittest

from minkms import crypto
from minkms.errors import ErrDecrypt, KMSError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


class KeyTypeTests(unittest.TestCase):
    def test_default_and_canonical(self):
        self.assertEqual(crypto.key_type(""), "AES256")
        self.assertEqual(crypto.key_type("AES256"), "AES256")
        self.assertEqual(crypto.key_type("chacha20"), "ChaCha20")

    def test_unknown(self):
        e = self.assertRaises(KMSError, crypto.key_type, "RSA")
        self.assertEqual(e, KMSError(400, "invalid key type 'RSA': must be AES256 or ChaCha20"))

    def test_material_length(self):
        crypto.check_key_material(KEY, "AES256")
        e = self.assertRaises(KMSError, crypto.check_key_material, b"x" * 31, "AES256")
        self.assertEqual(e, KMSError(400, "invalid key: a AES256 key must be 32 bytes, not 31"))
        self.assertEqual(len(crypto.new_key_material()), 32)


class CiphertextTests(unittest.TestCase):
    def test_round_trip_both_types(self):
        for key_type in crypto.KEY_TYPES:
            for plaintext in (b"", b"x", b"hello world" * 100):
                ct = crypto.encrypt(KEY, key_type, 7, plaintext, b"aad")
                self.assertEqual(crypto.decrypt(KEY, key_type, 7, ct, b"aad"), plaintext)

    def test_layout(self):
        ct = crypto.encrypt(KEY, "ChaCha20", 0x01020304, b"abc", b"")
        self.assertEqual(ct[:6], b"\x01\x01\x02\x03\x04\x02")
        self.assertEqual(len(ct), 6 + 12 + 3 + 16)
        ct = crypto.encrypt(KEY, "AES256", 1, b"abc", b"")
        self.assertEqual(ct[:6], b"\x01\x00\x00\x00\x01\x01")

    def test_fresh_nonce(self):
        a = crypto.encrypt(KEY, "AES256", 1, b"same", b"")
        b = crypto.encrypt(KEY, "AES256", 1, b"same", b"")
        self.assertNotEqual(a, b)

    def test_never_json(self):
        for key_type in crypto.KEY_TYPES:
            for version in (1, 0x7B, 0x7B000000, 0xFFFFFFFF):
                ct = crypto.encrypt(KEY, key_type, version, b"{}", b"{}")
                self.assertNotEqual(ct[:1], b"{")

    def test_aad_binding(self):
        ct = crypto.encrypt(KEY, "AES256", 1, b"secret", b"bucket/object")
        for aad in (b"", b"bucket/object2", b"Bucket/object"):
            e = self.assertRaises(KMSError, crypto.decrypt, KEY, "AES256", 1, ct, aad)
            self.assertEqual(e, ErrDecrypt)

    def test_tamper_every_byte(self):
        for key_type in crypto.KEY_TYPES:
            ct = crypto.encrypt(KEY, key_type, 3, b"payload", b"aad")
            for i in range(len(ct)):
                for flip in (0x01, 0x80):
                    bad = bytearray(ct)
                    bad[i] ^= flip
                    e = self.assertRaises(KMSError, crypto.decrypt, KEY, key_type, 3, bytes(bad), b"aad")
                    self.assertEqual(e, ErrDecrypt)

    def test_truncated_and_extended(self):
        ct = crypto.encrypt(KEY, "AES256", 1, b"payload", b"")
        for bad in (b"", ct[:1], ct[:6], ct[:33], ct[:-1], ct + b"\x00"):
            e = self.assertRaises(KMSError, crypto.decrypt, KEY, "AES256", 1, bad, b"")
            self.assertEqual(e, ErrDecrypt)

    def test_wrong_key_version_or_type(self):
        ct = crypto.encrypt(KEY, "AES256", 2, b"payload", b"")
        for args in ((OTHER_KEY, "AES256", 2), (KEY, "AES256", 1), (KEY, "ChaCha20", 2)):
            e = self.assertRaises(KMSError, crypto.decrypt, *args, ct, b"")
            self.assertEqual(e, ErrDecrypt)

    def test_same_material_other_version_is_another_key(self):
        # The per-version subkey: rewriting the version field (and asking
        # for that version) still fails authentication.
        ct = bytearray(crypto.encrypt(KEY, "AES256", 2, b"payload", b""))
        ct[1:5] = struct.pack(">I", 3)
        e = self.assertRaises(KMSError, crypto.decrypt, KEY, "AES256", 3, bytes(ct), b"")
        self.assertEqual(e, ErrDecrypt)

    def test_parse_version(self):
        ct = crypto.encrypt(KEY, "ChaCha20", 42, b"x", b"")
        self.assertEqual(crypto.parse_ciphertext_version(ct), 42)

    def test_parse_version_malformed(self):
        good = crypto.encrypt(KEY, "AES256", 1, b"x", b"")
        for bad in (
            b"",
            b'{"aead":"AES-256-GCM"}' + bytes(40),
            b"\x02" + good[1:],
            good[:1] + b"\x00\x00\x00\x00" + good[5:],
            good[:5] + b"\x03" + good[6:],
            good[:20],
        ):
            e = self.assertRaises(KMSError, crypto.parse_ciphertext_version, bad)
            self.assertEqual(e, ErrDecrypt)

    def test_version_range(self):
        self.assertRaises(ValueError, crypto.encrypt, KEY, "AES256", 0, b"", b"")
        self.assertRaises(ValueError, crypto.encrypt, KEY, "AES256", 2**32, b"", b"")


class DataKeyTests(unittest.TestCase):
    def test_lengths(self):
        self.assertEqual(len(crypto.generate_data_key(0)), 32)
        self.assertEqual(len(crypto.generate_data_key(1)), 1)
        self.assertEqual(len(crypto.generate_data_key(64)), 64)
        self.assertEqual(len(crypto.generate_data_key(1024)), 1024)

    def test_too_long(self):
        e = self.assertRaises(KMSError, crypto.generate_data_key, 1025)
        self.assertEqual(e, KMSError(400, "invalid key length 1025: must be at most 1024 bytes"))

    def test_random(self):
        self.assertNotEqual(crypto.generate_data_key(32), crypto.generate_data_key(32))


class MACTests(unittest.TestCase):
    def test_deterministic(self):
        a = crypto.mac(KEY, 1, b"message")
        self.assertEqual(a, crypto.mac(KEY, 1, b"message"))
        self.assertEqual(len(a), 32)

    def test_depends_on_everything(self):
        base = crypto.mac(KEY, 1, b"message")
        self.assertNotEqual(base, crypto.mac(KEY, 2, b"message"))
        self.assertNotEqual(base, crypto.mac(OTHER_KEY, 1, b"message"))
        self.assertNotEqual(base, crypto.mac(KEY, 1, b"message!"))

    def test_known_answer(self):
        # Pins the MAC subkey label: changing it breaks every stored MAC.
        self.assertEqual(
            crypto.mac(KEY, 1, b"").hex(),
            "513a9944e521397f0a8047fb27a48a44a9152a8cb0af3b216858a7523d03f511",
        )


class KnownAnswerTests(unittest.TestCase):
    """Ciphertexts made by this layout must stay decryptable forever."""

    def test_aes256(self):
        ct = bytes.fromhex(
            "01000000010132f8a7280bad35c16af3b9abcb0ad50ecfc0231fc4908bb3570ee523ac562b52aa81e4d30bca0fdd"
        )
        self.assertEqual(crypto.decrypt(KEY, "AES256", 1, ct, b"ctx"), b"known answer")

    def test_chacha20(self):
        ct = bytes.fromhex(
            "010000000502fb308c122ccf674f1f8b78b720ad5d747054cf5a3aae8fc127758fdfdb6b01a395362f608db24c11"
        )
        self.assertEqual(crypto.decrypt(KEY, "ChaCha20", 5, ct, b"ctx"), b"known answer")
