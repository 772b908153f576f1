"""Tests for L{minkms.state.reads}: pagination, key operations, statuses."""

import gc
import sys

from twisted.trial import unittest

from minkms import crypto
from minkms.errors import (
    ErrDecrypt,
    ErrEnclaveNotFound,
    ErrIdentityNotFound,
    ErrKeyNotFound,
    ErrPolicyNotFound,
    KMSError,
)
from minkms.state import changes as sc, reads
from tests.test_state_fixtures import ADMIN, USER, Driver, ident

NAMES = sorted(["a", "a-1", "a-2", "ab", "b", "b-1", "c", "\u00e9t\u00e9", "Z"])


class PaginateTests(unittest.TestCase):
    def pages(self, prefix="", limit=0, visible=None, names=NAMES):
        out, after, count = [], "", 0
        while True:
            page, after = reads.paginate(names, prefix, after, limit, visible)
            out.append(page)
            count += 1
            if not after or count > 50:
                return out

    def test_byte_order(self):
        self.assertEqual(
            reads.paginate(NAMES, "", "", 0), (["Z", "a", "a-1", "a-2", "ab", "b", "b-1", "c", "\u00e9t\u00e9"], "")
        )

    def test_limit_one_round_trip(self):
        pages = self.pages(limit=1)
        self.assertEqual([p[0] for p in pages], NAMES)
        self.assertTrue(all(len(p) == 1 for p in pages))

    def test_limits(self):
        for limit in range(1, len(NAMES) + 2):
            pages = self.pages(limit=limit)
            self.assertEqual(sum(pages, []), NAMES)
            self.assertTrue(all(len(p) <= limit for p in pages))

    def test_exact_fit_ends_with_empty_continuation(self):
        self.assertEqual(reads.paginate(NAMES, "a", "", 4), (["a", "a-1", "a-2", "ab"], ""))

    def test_continue_at_is_inclusive(self):
        self.assertEqual(reads.paginate(NAMES, "", "b", 2), (["b", "b-1"], "c"))

    def test_continue_at_vanished(self):
        self.assertEqual(reads.paginate(NAMES, "", "a-15", 2), (["a-2", "ab"], "b"))
        self.assertEqual(reads.paginate(NAMES, "", "zzz", 2), (["\u00e9t\u00e9"], ""))

    def test_prefix(self):
        self.assertEqual(reads.paginate(NAMES, "a-", "", 0), (["a-1", "a-2"], ""))
        self.assertEqual(reads.paginate(NAMES, "a", "", 2), (["a", "a-1"], "a-2"))
        self.assertEqual(reads.paginate(NAMES, "a", "a-2", 2), (["a-2", "ab"], ""))
        self.assertEqual(reads.paginate(NAMES, "nothing", "", 0), ([], ""))

    def test_continue_at_outside_prefix(self):
        self.assertEqual(reads.paginate(NAMES, "b", "a", 0), ([], ""))
        self.assertEqual(reads.paginate(NAMES, "b", "c", 0), ([], ""))

    def test_default_and_maximum_limit(self):
        names = [f"k{i:05d}" for i in range(2500)]
        page, after = reads.paginate(names, "", "", 0)
        self.assertEqual((len(page), after), (1000, "k01000"))
        page, after = reads.paginate(names, "", "", 5000)
        self.assertEqual((len(page), after), (1000, "k01000"))

    def test_visible_filter(self):
        visible = lambda name: not name.startswith("a")  # noqa: E731
        self.assertEqual(self.pages(limit=2, visible=visible), [["Z", "b"], ["b-1", "c"], ["\u00e9t\u00e9"]])
        self.assertEqual(reads.paginate(NAMES, "a", "", 0, visible), ([], ""))


class KeyReadTests(unittest.TestCase):
    def setUp(self):
        self.d = Driver().setup()
        self.d.ok(sc.CreateKey, enclave="e1", name="k")
        self.d.ok(sc.CreateKey, enclave="e1", name="k", add_version=True)
        self.d.ok(sc.CreateKey, enclave="e1", name="c", key_type="ChaCha20")
        self.state = self.d.state

    def test_status(self):
        self.assertEqual(reads.key_status(self.state, "e1", "k").version, 2)
        self.assertEqual(reads.key_status(self.state, "e1", "k", 1).version, 1)
        for name, version in (("k", 3), ("nope", 0), ("nope", 1)):
            e = self.assertRaises(KMSError, reads.key_status, self.state, "e1", name, version)
            self.assertEqual(e, ErrKeyNotFound)
        e = self.assertRaises(KMSError, reads.key_status, self.state, "nope", "k", 0)
        self.assertEqual(e, ErrEnclaveNotFound)

    def test_encrypt_decrypt(self):
        for name in ("k", "c"):
            version, ct = reads.encrypt(self.state, "e1", name, 0, b"data", b"ctx")
            self.assertEqual(reads.decrypt(self.state, "e1", name, 0, ct, b"ctx"), b"data")
            self.assertEqual(reads.decrypt(self.state, "e1", name, version, ct, b"ctx"), b"data")

    def test_decrypt_after_rotation(self):
        version, ct = reads.encrypt(self.state, "e1", "k", 0, b"old", b"")
        self.assertEqual(version, 2)
        v1, ct1 = reads.encrypt(self.state, "e1", "k", 1, b"older", b"")
        self.assertEqual(v1, 1)
        self.d.ok(sc.CreateKey, enclave="e1", name="k", add_version=True)
        self.assertEqual(reads.decrypt(self.state, "e1", "k", 0, ct, b""), b"old")
        self.assertEqual(reads.decrypt(self.state, "e1", "k", 0, ct1, b""), b"older")

    def test_decrypt_errors(self):
        _, ct = reads.encrypt(self.state, "e1", "k", 1, b"data", b"ctx")
        for version, ciphertext, aad in (
            (0, ct, b"other"),
            (2, ct, b"ctx"),
            (0, ct[:-1], b"ctx"),
            (0, b"", b"ctx"),
            (0, b'{"bad":1}', b"ctx"),
        ):
            e = self.assertRaises(KMSError, reads.decrypt, self.state, "e1", "k", version, ciphertext, aad)
            self.assertEqual(e, ErrDecrypt)
        e = self.assertRaises(KMSError, reads.decrypt, self.state, "e1", "nope", 0, ct, b"ctx")
        self.assertEqual(e, ErrKeyNotFound)

    def test_decrypt_other_key_of_same_version(self):
        _, ct = reads.encrypt(self.state, "e1", "c", 1, b"data", b"")
        e = self.assertRaises(KMSError, reads.decrypt, self.state, "e1", "k", 0, ct, b"")
        self.assertEqual(e, ErrDecrypt)

    def test_decrypt_removed_version(self):
        _, ct = reads.encrypt(self.state, "e1", "k", 1, b"data", b"")
        self.d.ok(sc.DeleteKey, enclave="e1", name="k", version=1)
        e = self.assertRaises(KMSError, reads.decrypt, self.state, "e1", "k", 0, ct, b"")
        self.assertEqual(e, ErrKeyNotFound)

    def test_decrypt_removed_and_recreated_key(self):
        _, ct = reads.encrypt(self.state, "e1", "k", 0, b"data", b"")
        self.d.ok(sc.DeleteKey, enclave="e1", name="k", all_versions=True)
        self.d.ok(sc.CreateKey, enclave="e1", name="k")
        e = self.assertRaises(KMSError, reads.decrypt, self.state, "e1", "k", 0, ct, b"")
        self.assertEqual(e, ErrKeyNotFound)

    def test_decrypt_version_never_issued(self):
        _, ct = reads.encrypt(self.state, "e1", "k", 2, b"data", b"")
        forged = bytearray(ct)
        forged[4] = 9
        e = self.assertRaises(KMSError, reads.decrypt, self.state, "e1", "k", 0, bytes(forged), b"")
        self.assertEqual(e, ErrDecrypt)

    def test_generate(self):
        for length, size in ((0, 32), (1, 1), (64, 64), (1024, 1024)):
            version, plaintext, ct = reads.generate_key(self.state, "e1", "k", 0, b"ctx", length)
            self.assertEqual((version, len(plaintext)), (2, size))
            self.assertEqual(reads.decrypt(self.state, "e1", "k", 0, ct, b"ctx"), plaintext)
        e = self.assertRaises(KMSError, reads.generate_key, self.state, "e1", "k", 0, b"", 1025)
        self.assertEqual(e, KMSError(400, "invalid key length 1025: must be at most 1024 bytes"))
        e = self.assertRaises(KMSError, reads.generate_key, self.state, "e1", "nope", 0, b"", 1025)
        self.assertEqual(e, ErrKeyNotFound)

    def test_mac(self):
        v, tag = reads.mac(self.state, "e1", "k", 0, b"msg")
        self.assertEqual(v, 2)
        self.assertEqual(reads.mac(self.state, "e1", "k", 2, b"msg"), (2, tag))
        v1, tag1 = reads.mac(self.state, "e1", "k", 1, b"msg")
        self.assertEqual(v1, 1)
        self.assertNotEqual(tag1, tag)
        record = reads.key_status(self.state, "e1", "k", 2).record
        self.assertEqual(tag, crypto.mac(record.material, 2, b"msg"))

    def test_list_keys_latest_version(self):
        page = reads.list_keys(self.state, "e1", "", "", 0)
        self.assertEqual([(s.name, s.version) for s in page.items], [("c", 1), ("k", 2)])
        self.assertEqual(page.continue_at, "")

    def test_list_key_versions(self):
        self.d.ok(sc.CreateKey, enclave="e1", name="k", add_version=True)
        self.d.ok(sc.DeleteKey, enclave="e1", name="k", version=2)
        page = reads.list_key_versions(self.state, "e1", "k", "", 0)
        self.assertEqual([s.version for s in page.items], [1, 3])
        page = reads.list_key_versions(self.state, "e1", "k", "", 1)
        self.assertEqual(([s.version for s in page.items], page.continue_at), ([1], "3"))
        page = reads.list_key_versions(self.state, "e1", "k", "3", 1)
        self.assertEqual(([s.version for s in page.items], page.continue_at), ([3], ""))
        e = self.assertRaises(KMSError, reads.list_key_versions, self.state, "e1", "k", "x", 0)
        self.assertEqual(e, KMSError(400, "invalid ContinueAt 'x': expected a key version"))
        e = self.assertRaises(KMSError, reads.list_key_versions, self.state, "e1", "k*", "", 0)
        self.assertEqual(e, ErrKeyNotFound)


class OtherReadTests(unittest.TestCase):
    def setUp(self):
        self.d = Driver().setup()

    def test_enclaves(self):
        self.d.ok(sc.CreateEnclave, name="a")
        page = reads.list_enclaves(self.d.state, "", "", 2)
        self.assertEqual(([e.name for e in page.items], page.continue_at), (["a", "e1"], "e2"))
        e = self.assertRaises(KMSError, reads.enclave, self.d.state, "zz")
        self.assertEqual(e, ErrEnclaveNotFound)

    def test_policies(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p2")
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p1")
        page = reads.list_policies(self.d.state, "e1", "p", "", 0)
        self.assertEqual([p.name for p in page.items], ["p1", "p2"])
        e = self.assertRaises(KMSError, reads.policy, self.d.state, "e1", "zz")
        self.assertEqual(e, ErrPolicyNotFound)

    def test_identities(self):
        svc = ident("svc")
        self.d.ok(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=svc, service_account=True)
        status = reads.identity(self.d.state, "e1", ADMIN)
        self.assertEqual(status.service_accounts, (svc,))
        status = reads.identity(self.d.state, "e1", svc)
        self.assertEqual((status.privilege, status.record.parent), ("Admin", ADMIN))
        page = reads.list_identities(self.d.state, "e1", "", "", 0)
        self.assertEqual([s.record.identity for s in page.items], sorted([ADMIN, USER, svc]))
        e = self.assertRaises(KMSError, reads.identity, self.d.state, "e1", ident("zz"))
        self.assertEqual(e, ErrIdentityNotFound)


class KeyMaterialLifetimeTests(unittest.TestCase):
    """
    Issue 11 item 6: once a key version is deleted, nothing in the process
    holds its material or the ciphers derived from it (no cache keyed by
    key material).
    """

    def holders(self, material) -> int:
        """
        References to C{material} beyond the caller's variable (CPython
        reference counts: a cache holds its key even where the garbage
        collector cannot see it).
        """
        gc.collect()
        return sys.getrefcount(material) - 3

    def material(self, d, version):
        """The bytes object the applied state holds for a key version (its packed record)."""
        return d.state.enclaves["e1"].keys["k"][version]

    def ciphers(self, version) -> int:
        """Live ciphers derived from a version of any key."""
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, crypto.VersionCipher) and o.version == version)

    def test_deleted_key_leaves_no_cache(self):
        d = Driver().setup()
        d.ok(sc.CreateKey, enclave="e1", name="k")
        d.log.clear()
        secret = self.material(d, 1)
        version, sealed = reads.encrypt(d.state, "e1", "k", 0, b"p", b"")
        self.assertEqual(reads.decrypt(d.state, "e1", "k", 0, sealed, b""), b"p")
        reads.mac(d.state, "e1", "k", 0, b"m")
        self.assertEqual(self.holders(secret), 1, "the key's record")
        ciphers = self.ciphers(1)
        d.ok(sc.DeleteKey, enclave="e1", name="k", all_versions=True)
        self.assertEqual(self.holders(secret), 0)
        self.assertEqual(self.ciphers(1), ciphers - 1, "the version's derived cipher")

    def test_rotated_away_version_leaves_no_cache(self):
        d = Driver().setup()
        d.ok(sc.CreateKey, enclave="e1", name="k")
        d.ok(sc.CreateKey, enclave="e1", name="k", add_version=True)
        d.log.clear()
        first, second = self.material(d, 1), self.material(d, 2)
        for version in (1, 2):
            reads.encrypt(d.state, "e1", "k", version, b"p", b"")
        ciphers = (self.ciphers(1), self.ciphers(2))
        d.ok(sc.DeleteKey, enclave="e1", name="k", version=1)
        self.assertEqual(self.holders(first), 0)
        self.assertEqual(self.holders(second), 1, "the key's record")
        self.assertEqual((self.ciphers(1), self.ciphers(2)), (ciphers[0] - 1, ciphers[1]))
