"""
End-to-end tests of L{minkms.kms.dispatch} on protobuf messages:
prepare_write -> encode -> apply -> execute_read, following the
conformance checklist items 5-16 of the spec (section 12).
"""

from twisted.trial import unittest

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
from minkms.kms.answers import answers
from minkms.kms.dispatch import CallContext, execute_read, prepare_write, result_error
from minkms.kms.proposals import proposals
from minkms.state import changes as sc
from minkms.state.machine import StateMachine
from minkms.state.policy import policy_from_json, rules_to_proto
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import BY_NAME, COMMANDS
from tests.test_state_fixtures import T0, ident

ROOT = ident("dispatch-sysadmin")
ADMIN = ident("dispatch-admin")
ADMIN2 = ident("dispatch-admin-e2")
USER = ident("dispatch-user")
SVC = ident("dispatch-service")
STRANGER = ident("dispatch-stranger")


def bad(message):
    return KMSError(400, message)


class Harness:
    """One node's state machine driven through the dispatch functions."""

    def __init__(self) -> None:
        self.machine = StateMachine()
        self.now = T0
        self.proposed: list[bytes] = []

    def ctx(self, caller, enclave):
        self.now += 1_000_000_000
        return CallContext(caller=caller, enclave=enclave, sysadmin=ROOT, now_ns=self.now)

    def write(self, name, request, enclave="", caller=ROOT):
        """Prepare, encode, apply; raise the error a client would see."""
        command = prepare_write(self.machine.state, self.ctx(caller, enclave), BY_NAME[name], request)
        data = command.encode()
        self.proposed.append(data)
        error = result_error(self.machine.apply(data))
        if error is not None:
            raise error

    def read(self, name, request, enclave="", caller=ROOT):
        return execute_read(self.machine, self.ctx(caller, enclave), BY_NAME[name], request)


class DispatchTestCase(unittest.TestCase):
    def setUp(self):
        self.h = Harness()

    def fails(self, error, f, *args, **kw):
        e = self.assertRaises(KMSError, f, *args, **kw)
        self.assertEqual(e, error)
        return e

    def world(self):
        """e1 with an Admin and a User, e2 with its own Admin."""
        h = self.h
        h.write("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="e1"))
        h.write("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="e2"))
        h.write("IDENTITY:CREATE", pb.CreateIdentityRequest(Identity=ADMIN, Privilege="Admin"), "e1")
        h.write("IDENTITY:CREATE", pb.CreateIdentityRequest(Identity=USER), "e1")
        h.write("IDENTITY:CREATE", pb.CreateIdentityRequest(Identity=ADMIN2, Privilege="Admin"), "e2")
        return h


class EnclaveTests(DispatchTestCase):
    """Checklist item 5."""

    def test_create_status(self):
        h = self.h
        h.write("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="e1"))
        self.fails(ErrEnclaveExists, h.write, "ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="e1"))
        status = h.read("ENCLAVE:STATUS", pb.EnclaveStatusRequest(Name="e1"))
        self.assertEqual(status.Name, "e1")
        self.assertEqual(status.CreatedBy, ROOT)
        self.assertEqual(status.CreatedAt.ToNanoseconds(), T0 + 10**9)
        self.fails(ErrEnclaveNotFound, h.read, "ENCLAVE:STATUS", pb.EnclaveStatusRequest(Name="missing"))

    def test_list_iteration(self):
        h = self.h
        names = ["a1", "a2", "a3", "b1", "minio"]
        for name in names:
            h.write("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name=name))
        for limit in range(1, 7):
            seen, after = [], ""
            while True:
                page = h.read("ENCLAVE:LIST", pb.ListRequest(ContinueAt=after, Limit=limit))
                seen += [e.Name for e in page.Enclaves]
                after = page.ContinueAt
                if not after:
                    break
            self.assertEqual(seen, names)
        page = h.read("ENCLAVE:LIST", pb.ListRequest(Prefix="a", Limit=2))
        self.assertEqual(([e.Name for e in page.Enclaves], page.ContinueAt), (["a1", "a2"], "a3"))

    def test_invalid_name(self):
        self.fails(
            bad("invalid enclave name: contains '/' at position 2"),
            self.h.write,
            "ENCLAVE:CREATE",
            pb.CreateEnclaveRequest(Name="a/b"),
        )
        self.fails(
            bad("invalid enclave name: contains U+0020 at position 2"),
            self.h.write,
            "ENCLAVE:CREATE",
            pb.CreateEnclaveRequest(Name="a b"),
        )
        self.assertEqual(self.h.proposed, [])

    def test_scope(self):
        h = self.world()
        self.fails(
            bad("ENCLAVE:CREATE is a cluster command: send it without an enclave"),
            h.write,
            "ENCLAVE:CREATE",
            pb.CreateEnclaveRequest(Name="x"),
            "e1",
        )
        self.fails(
            bad("KEY:CREATE needs an enclave: send it to /v1/kms/ENCLAVE"),
            h.write,
            "KEY:CREATE",
            pb.CreateKeyRequest(Name="k"),
        )
        self.fails(
            bad("KEY:STATUS needs an enclave: send it to /v1/kms/ENCLAVE"),
            h.read,
            "KEY:STATUS",
            pb.KeyStatusRequest(Name="k"),
        )
        # non-SysAdmins get 403 before any of that
        self.fails(ErrPermission, h.write, "ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="x"), "e1", ADMIN)
        self.fails(ErrPermission, h.write, "KEY:CREATE", pb.CreateKeyRequest(Name="k"), "", ADMIN)

    def test_missing_enclave(self):
        h = self.world()
        self.fails(ErrEnclaveNotFound, h.write, "KEY:CREATE", pb.CreateKeyRequest(Name="k"), "nope")
        self.fails(ErrEnclaveNotFound, h.read, "KEY:LIST", pb.ListRequest(), "nope")
        self.fails(ErrPermission, h.write, "KEY:CREATE", pb.CreateKeyRequest(Name="k"), "nope", ADMIN)
        self.fails(ErrPermission, h.read, "KEY:LIST", pb.ListRequest(), "nope", ADMIN)

    def test_delete(self):
        """Checklist item 16: the contents are gone."""
        h = self.world()
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        h.write("ENCLAVE:DELETE", pb.DeleteEnclaveRequest(Name="e1"))
        self.fails(ErrEnclaveNotFound, h.write, "ENCLAVE:DELETE", pb.DeleteEnclaveRequest(Name="e1"))
        h.write("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="e1"))
        self.fails(ErrKeyNotFound, h.read, "KEY:STATUS", pb.KeyStatusRequest(Name="k"), "e1")
        self.assertEqual(len(h.read("IDENTITY:LIST", pb.ListRequest(), "e1").Identities), 0)
        self.fails(ErrPermission, h.read, "KEY:LIST", pb.ListRequest(), "e1", ADMIN)


class KeyTests(DispatchTestCase):
    """Checklist items 6-12."""

    def setUp(self):
        super().setUp()
        self.world()

    def status(self, name, version=0):
        return self.h.read("KEY:STATUS", pb.KeyStatusRequest(Name=name, Version=version), "e1")

    def test_create(self):
        h = self.h
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        status = self.status("k")
        self.assertEqual((status.Name, status.Version, status.Type), ("k", 1, "AES256"))
        self.assertEqual(status.CreatedBy, ROOT)
        self.assertTrue(status.HasField("CreatedAt"))
        self.fails(ErrKeyExists, h.write, "KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="c", Type="ChaCha20"), "e1")
        self.assertEqual(self.status("c").Type, "ChaCha20")
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k", AddVersion=True), "e1", ADMIN)
        status = self.status("k")
        self.assertEqual((status.Version, status.CreatedBy), (2, ADMIN))
        self.fails(
            bad("invalid key type 'RSA': must be AES256 or ChaCha20"),
            h.write,
            "KEY:CREATE",
            pb.CreateKeyRequest(Name="r", Type="RSA"),
            "e1",
        )

    def test_fresh_material_per_write(self):
        h = self.h
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="a"), "e1")
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="b"), "e1")
        a = sc.decode(h.proposed[-2]).material
        b = sc.decode(h.proposed[-1]).material
        self.assertEqual(len(a), 32)
        self.assertNotEqual(a, b)

    def test_import(self):
        h = self.h
        h.write("KEY:IMPORT", pb.ImportKeyRequest(Name="i", Key=b"\x05" * 32), "e1")
        self.assertEqual(self.status("i").Version, 1)
        self.fails(ErrKeyExists, h.write, "KEY:IMPORT", pb.ImportKeyRequest(Name="i", Key=b"\x05" * 32), "e1")
        self.fails(
            bad("invalid key: a AES256 key must be 32 bytes, not 16"),
            h.write,
            "KEY:IMPORT",
            pb.ImportKeyRequest(Name="j", Key=b"\x05" * 16),
            "e1",
        )
        # import is governed by KEY:CREATE
        self.fails(ErrPermission, h.write, "KEY:IMPORT", pb.ImportKeyRequest(Name="j", Key=b"\x05" * 32), "e1", USER)
        encrypted = h.read("KEY:ENCRYPT", pb.EncryptRequest(Name="i", Plaintext=b"p"), "e1")
        plain = h.read("KEY:DECRYPT", pb.DecryptRequest(Name="i", Ciphertext=encrypted.Ciphertext), "e1")
        self.assertEqual(plain.Plaintext, b"p")

    def test_status(self):
        h = self.h
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k", AddVersion=True), "e1")
        self.assertEqual(self.status("k").Version, 2)
        self.assertEqual(self.status("k", 1).Version, 1)
        self.fails(ErrKeyNotFound, self.status, "k", 3)
        self.fails(ErrKeyNotFound, self.status, "missing")

    def test_list_pagination(self):
        h = self.h
        names = ["k-a", "k-b", "k-c", "other", "z"]
        for name in reversed(names):
            h.write("KEY:CREATE", pb.CreateKeyRequest(Name=name), "e1")
        for limit in range(1, 7):
            seen, after = [], ""
            while True:
                page = h.read("KEY:LIST", pb.ListRequest(ContinueAt=after, Limit=limit), "e1")
                self.assertLessEqual(len(page.Keys), limit)
                seen += [k.Name for k in page.Keys]
                after = page.ContinueAt
                if not after:
                    break
            self.assertEqual(seen, names)
        page = h.read("KEY:LIST", pb.ListRequest(Prefix="k-", Limit=2), "e1")
        self.assertEqual(([k.Name for k in page.Keys], page.ContinueAt), (["k-a", "k-b"], "k-c"))
        page = h.read("KEY:LIST", pb.ListRequest(Prefix="k-", ContinueAt="k-c", Limit=2), "e1")
        self.assertEqual(([k.Name for k in page.Keys], page.ContinueAt), (["k-c"], ""))
        self.assertEqual(page.Keys[0].Type, "AES256")

    def test_list_versions(self):
        h = self.h
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k", AddVersion=True), "e1")
        page = h.read("KEY:LISTVERSIONS", pb.ListRequest(Prefix="k"), "e1")
        self.assertEqual([(k.Name, k.Version) for k in page.Keys], [("k", 1), ("k", 2)])

    def test_generate(self):
        h = self.h
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        for length, size in ((0, 32), (64, 64)):
            out = h.read("KEY:GENERATE", pb.GenerateKeyRequest(Name="k", Length=length, AssociatedData=b"ctx"), "e1")
            self.assertEqual((out.Version, len(out.Plaintext)), (1, size))
            plain = h.read(
                "KEY:DECRYPT", pb.DecryptRequest(Name="k", Ciphertext=out.Ciphertext, AssociatedData=b"ctx"), "e1"
            )
            self.assertEqual(plain.Plaintext, out.Plaintext)
        self.fails(
            bad("invalid key length 1025: must be at most 1024 bytes"),
            h.read,
            "KEY:GENERATE",
            pb.GenerateKeyRequest(Name="k", Length=1025),
            "e1",
        )
        self.fails(ErrKeyNotFound, h.read, "KEY:GENERATE", pb.GenerateKeyRequest(Name="x", Length=1025), "e1")
        batch = [h.read("KEY:GENERATE", pb.GenerateKeyRequest(Name="k"), "e1") for _ in range(3)]
        self.assertEqual(len({b.Plaintext for b in batch}), 3)

    def test_encrypt_decrypt(self):
        h = self.h
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        one = h.read("KEY:ENCRYPT", pb.EncryptRequest(Name="k", Plaintext=b"v1 data", AssociatedData=b"aad"), "e1")
        self.assertEqual(one.Version, 1)
        self.assertNotEqual(one.Ciphertext[:1], b"{")
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k", AddVersion=True), "e1")
        two = h.read("KEY:ENCRYPT", pb.EncryptRequest(Name="k", Plaintext=b"v2 data", AssociatedData=b"aad"), "e1")
        self.assertEqual(two.Version, 2)

        def decrypt(ciphertext, version=0, aad=b"aad"):
            return h.read(
                "KEY:DECRYPT",
                pb.DecryptRequest(Name="k", Version=version, Ciphertext=ciphertext, AssociatedData=aad),
                "e1",
            ).Plaintext

        self.assertEqual(decrypt(one.Ciphertext), b"v1 data")
        self.assertEqual(decrypt(one.Ciphertext, 1), b"v1 data")
        self.assertEqual(decrypt(two.Ciphertext), b"v2 data")
        self.assertEqual(decrypt(two.Ciphertext, 2), b"v2 data")
        self.fails(ErrDecrypt, decrypt, one.Ciphertext, 2)
        self.fails(ErrDecrypt, decrypt, one.Ciphertext, 0, b"wrong")
        for i in (0, 7, 20, len(one.Ciphertext) - 1):
            tampered = bytearray(one.Ciphertext)
            tampered[i] ^= 0x01
            self.fails(ErrDecrypt, decrypt, bytes(tampered))
        self.fails(ErrKeyNotFound, h.read, "KEY:ENCRYPT", pb.EncryptRequest(Name="k", Version=3), "e1")

    def test_mac(self):
        h = self.h
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        a = h.read("KEY:MAC", pb.MACRequest(Name="k", Message=b"m"), "e1")
        b = h.read("KEY:MAC", pb.MACRequest(Name="k", Message=b"m"), "e1")
        self.assertEqual((a.Version, a.MAC), (b.Version, b.MAC))
        self.assertEqual((a.Version, len(a.MAC)), (1, 32))
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k", AddVersion=True), "e1")
        c = h.read("KEY:MAC", pb.MACRequest(Name="k", Message=b"m"), "e1")
        self.assertEqual(c.Version, 2)
        self.assertNotEqual(c.MAC, a.MAC)
        self.assertEqual(h.read("KEY:MAC", pb.MACRequest(Name="k", Version=1, Message=b"m"), "e1").MAC, a.MAC)

    def test_delete(self):
        h = self.h
        for _ in range(3):
            h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k", AddVersion=True), "e1")
        old = h.read("KEY:ENCRYPT", pb.EncryptRequest(Name="k", Version=1, Plaintext=b"x"), "e1")
        h.write("KEY:DELETE", pb.DeleteKeyRequest(Name="k"), "e1")
        self.assertEqual(self.status("k").Version, 2)
        h.write("KEY:DELETE", pb.DeleteKeyRequest(Name="k", Version=1), "e1")
        self.fails(ErrKeyNotFound, h.read, "KEY:DECRYPT", pb.DecryptRequest(Name="k", Ciphertext=old.Ciphertext), "e1")
        self.fails(ErrKeyNotFound, h.write, "KEY:DELETE", pb.DeleteKeyRequest(Name="k", Version=1), "e1")
        self.fails(
            bad("invalid arguments: cannot delete all versions and a specific version at once"),
            h.write,
            "KEY:DELETE",
            pb.DeleteKeyRequest(Name="k", Version=2, AllVersions=True),
            "e1",
        )
        h.write("KEY:DELETE", pb.DeleteKeyRequest(Name="k", AllVersions=True), "e1")
        self.fails(ErrKeyNotFound, self.status, "k")
        self.fails(ErrKeyNotFound, h.write, "KEY:DELETE", pb.DeleteKeyRequest(Name="k"), "e1")
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        self.assertEqual(self.status("k").Version, 4)


class PolicyTests(DispatchTestCase):
    """Checklist item 13 and the policy half of 16."""

    def setUp(self):
        super().setUp()
        self.world()

    def create(self, name, document, caller=ROOT):
        allow, deny = policy_from_json(document)
        request = pb.CreatePolicyRequest(Name=name)
        rules_to_proto(allow, request.Allow)
        rules_to_proto(deny, request.Deny)
        self.h.write("POLICY:CREATE", request, "e1", caller)

    def test_round_trip(self):
        h = self.h
        for form in ('"k*"', '["k*"]', '{"k*":{}}'):
            self.create("p", '{"allow":{"key:encrypt":' + form + '},"deny":{"KEY:DECRYPT":["a","bb"]}}')
            policy = h.read("POLICY:GET", pb.PolicyRequest(Name="p"), "e1")
            self.assertEqual(dict(policy.Allow), {"KEY:ENCRYPT": pb.RuleSet(Rules={"k*": pb.Rule()})})
            self.assertEqual(sorted(policy.Deny["KEY:DECRYPT"].Rules), ["a", "bb"])
            self.assertEqual((policy.Name, policy.CreatedBy), ("p", ROOT))
        status = h.read("POLICY:STATUS", pb.PolicyRequest(Name="p"), "e1")
        self.assertEqual((status.Name, status.CreatedBy), ("p", ROOT))
        self.assertTrue(status.HasField("CreatedAt"))

    def test_rejects_invalid_actions(self):
        request = pb.CreatePolicyRequest(Name="p")
        request.Allow["!INVALID:203"].Rules["*"].SetInParent()
        self.fails(
            bad("invalid policy: unknown action '!INVALID:203' in allow"), self.h.write, "POLICY:CREATE", request, "e1"
        )
        request = pb.CreatePolicyRequest(Name="p")
        request.Allow["ENCLAVE:CREATE"].Rules["*"].SetInParent()
        self.fails(
            bad("invalid policy: 'ENCLAVE:CREATE' cannot be granted by a policy"),
            self.h.write,
            "POLICY:CREATE",
            request,
            "e1",
        )

    def test_list_and_missing(self):
        h = self.h
        for name in ("b", "a", "c"):
            self.create(name, "{}")
        page = h.read("POLICY:LIST", pb.ListRequest(Limit=2), "e1")
        self.assertEqual(([p.Name for p in page.Policies], page.ContinueAt), (["a", "b"], "c"))
        self.fails(ErrPolicyNotFound, h.read, "POLICY:GET", pb.PolicyRequest(Name="zz"), "e1")
        self.fails(ErrPolicyNotFound, h.read, "POLICY:STATUS", pb.PolicyRequest(Name="zz"), "e1")

    def test_assign_and_delete(self):
        h = self.h
        self.create("p", '{"allow":{"KEY:STATUS":"*"}}')
        self.fails(
            ErrPolicyNotFound, h.write, "POLICY:ASSIGN", pb.AssignPolicyRequest(Identity=USER, Policy="zz"), "e1"
        )
        self.fails(
            ErrIdentityNotFound, h.write, "POLICY:ASSIGN", pb.AssignPolicyRequest(Identity=STRANGER, Policy="p"), "e1"
        )
        self.fails(
            bad("cannot assign a policy to an identity with privilege Admin: only User identities have policies"),
            h.write,
            "POLICY:ASSIGN",
            pb.AssignPolicyRequest(Identity=ADMIN, Policy="p"),
            "e1",
        )
        h.write("POLICY:ASSIGN", pb.AssignPolicyRequest(Identity=USER, Policy="p"), "e1")
        self.assertEqual(h.read("IDENTITY:STATUS", pb.IdentityRequest(Identity=USER), "e1").Policy, "p")
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1")
        h.read("KEY:STATUS", pb.KeyStatusRequest(Name="k"), "e1", USER)
        h.write("POLICY:DELETE", pb.DeletePolicyRequest(Name="p"), "e1")
        self.fails(ErrPermission, h.read, "KEY:STATUS", pb.KeyStatusRequest(Name="k"), "e1", USER)
        self.fails(ErrPolicyNotFound, h.write, "POLICY:DELETE", pb.DeletePolicyRequest(Name="p"), "e1")


class IdentityTests(DispatchTestCase):
    """Checklist item 14 and the identity half of 16."""

    def setUp(self):
        super().setUp()
        self.world()

    def status(self, identity, caller=ROOT):
        return self.h.read("IDENTITY:STATUS", pb.IdentityRequest(Identity=identity), "e1", caller)

    def test_create_and_get(self):
        h = self.h
        h.write(
            "IDENTITY:CREATE",
            pb.CreateIdentityRequest(Identity=STRANGER, Privilege="User", Tags={"team": "storage", "env": "prod"}),
            "e1",
            ADMIN,
        )
        status = self.status(STRANGER)
        self.assertEqual(status.Identity, STRANGER)
        self.assertEqual(status.Privilege, 3)
        self.assertEqual(dict(status.Tags), {"team": "storage", "env": "prod"})
        self.assertEqual(status.CreatedBy, ADMIN)
        self.assertFalse(status.IsServiceAccount)
        self.assertEqual(self.status(ADMIN).Privilege, 2)
        self.fails(ErrIdentityNotFound, self.status, ident("nobody"))
        self.fails(
            bad("invalid identity: empty"), h.write, "IDENTITY:CREATE", pb.CreateIdentityRequest(Identity=""), "e1"
        )
        self.fails(
            bad("invalid privilege: SysAdmin cannot be given to an identity in an enclave"),
            h.write,
            "IDENTITY:CREATE",
            pb.CreateIdentityRequest(Identity=STRANGER, Privilege="SysAdmin"),
            "e1",
        )
        self.fails(
            bad("invalid identity tags: more than 32 tags"),
            h.write,
            "IDENTITY:CREATE",
            pb.CreateIdentityRequest(Identity=STRANGER, Tags={f"t{i}": "" for i in range(33)}),
            "e1",
        )

    def test_self(self):
        me = self.status("", USER)
        self.assertEqual((me.Identity, me.Privilege), (USER, 3))
        me = self.status(USER, USER)
        self.assertEqual(me.Identity, USER)
        root = self.status("", ROOT)
        self.assertEqual((root.Identity, root.Privilege, root.CreatedBy), (ROOT, 1, ROOT))
        self.fails(ErrPermission, self.status, ADMIN, USER)
        self.fails(ErrPermission, self.status, "", STRANGER)

    def test_service_accounts(self):
        h = self.h
        h.write("IDENTITY:CREATE", pb.CreateIdentityRequest(Identity=SVC, IsServiceAccount=True), "e1", ADMIN)
        status = self.status(SVC)
        self.assertTrue(status.IsServiceAccount)
        self.assertEqual((status.Privilege, status.CreatedBy), (2, ADMIN))
        self.assertEqual(list(self.status(ADMIN).ServiceAccounts), [SVC])
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k"), "e1", SVC)
        h.write("IDENTITY:DELETE", pb.DeleteIdentityRequest(Identity=ADMIN), "e1")
        self.fails(ErrIdentityNotFound, self.status, SVC)
        self.fails(ErrPermission, h.write, "KEY:CREATE", pb.CreateKeyRequest(Name="k2"), "e1", SVC)
        self.fails(ErrIdentityNotFound, h.write, "IDENTITY:DELETE", pb.DeleteIdentityRequest(Identity=ADMIN), "e1")

    def test_list(self):
        page = self.h.read("IDENTITY:LIST", pb.ListRequest(), "e1")
        self.assertEqual([i.Identity for i in page.Identities], sorted([ADMIN, USER]))
        page = self.h.read("IDENTITY:LIST", pb.ListRequest(Limit=1), "e1")
        self.assertEqual(page.ContinueAt, sorted([ADMIN, USER])[1])


class AuthorizationTests(DispatchTestCase):
    """Checklist items 4 and 15."""

    def setUp(self):
        super().setUp()
        h = self.world()
        allow, deny = policy_from_json(
            '{"allow":{"KEY:ENCRYPT":"k*","KEY:DECRYPT":"*","KEY:LIST":"*","KEY:STATUS":"*"},'
            '"deny":{"KEY:DECRYPT":"k*","KEY:LIST":"secret*"}}'
        )
        request = pb.CreatePolicyRequest(Name="app")
        rules_to_proto(allow, request.Allow)
        rules_to_proto(deny, request.Deny)
        h.write("POLICY:CREATE", request, "e1", ADMIN)
        h.write("POLICY:ASSIGN", pb.AssignPolicyRequest(Identity=USER, Policy="app"), "e1", ADMIN)
        for name in ("k1", "other", "secret"):
            h.write("KEY:CREATE", pb.CreateKeyRequest(Name=name), "e1", ADMIN)
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="k1"), "e2")

    def test_user(self):
        h = self.h
        out = h.read("KEY:ENCRYPT", pb.EncryptRequest(Name="k1", Plaintext=b"x"), "e1", USER)
        self.fails(
            ErrPermission, h.read, "KEY:DECRYPT", pb.DecryptRequest(Name="k1", Ciphertext=out.Ciphertext), "e1", USER
        )
        self.fails(ErrPermission, h.read, "KEY:ENCRYPT", pb.EncryptRequest(Name="other"), "e1", USER)
        self.fails(ErrPermission, h.write, "ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="x"), "", USER)
        self.fails(ErrPermission, h.write, "KEY:CREATE", pb.CreateKeyRequest(Name="k9"), "e1", USER)
        self.fails(ErrPermission, h.read, "KEY:STATUS", pb.KeyStatusRequest(Name="k1"), "e2", USER)
        page = h.read("KEY:LIST", pb.ListRequest(), "e1", USER)
        self.assertEqual([k.Name for k in page.Keys], ["k1", "other"])
        self.fails(ErrPermission, h.read, "KEY:LIST", pb.ListRequest(Prefix="secret"), "e1", USER)

    def test_existence_hidden_behind_permission(self):
        self.fails(ErrPermission, self.h.read, "KEY:ENCRYPT", pb.EncryptRequest(Name="missing"), "e1", USER)
        self.fails(ErrKeyNotFound, self.h.read, "KEY:ENCRYPT", pb.EncryptRequest(Name="k-missing"), "e1", USER)

    def test_admin(self):
        h = self.h
        h.write("KEY:CREATE", pb.CreateKeyRequest(Name="new"), "e1", ADMIN)
        h.write("POLICY:DELETE", pb.DeletePolicyRequest(Name="app"), "e1", ADMIN)
        h.write("IDENTITY:CREATE", pb.CreateIdentityRequest(Identity=STRANGER, Privilege="Admin"), "e1", ADMIN)
        self.fails(ErrPermission, h.read, "KEY:STATUS", pb.KeyStatusRequest(Name="k1"), "e2", ADMIN)
        self.fails(ErrPermission, h.write, "KEY:CREATE", pb.CreateKeyRequest(Name="x"), "e2", ADMIN)
        for name, request in (
            ("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="x")),
            ("ENCLAVE:DELETE", pb.DeleteEnclaveRequest(Name="e1")),
            ("CLUSTER:ADDNODE", pb.AddClusterNodeRequest(Host="h:7373")),
        ):
            self.fails(ErrPermission, h.write, name, request, "", ADMIN)
        for name, request in (
            ("ENCLAVE:STATUS", pb.EnclaveStatusRequest(Name="e1")),
            ("ENCLAVE:LIST", pb.ListRequest()),
            ("CLUSTER:STATUS", pb.ClusterStatusRequest()),
        ):
            self.fails(ErrPermission, h.read, name, request, "", ADMIN)

    def test_unknown_and_anonymous(self):
        for caller in (STRANGER, ""):
            self.fails(ErrPermission, self.h.read, "KEY:STATUS", pb.KeyStatusRequest(Name="k1"), "e1", caller)
            self.fails(ErrPermission, self.h.write, "KEY:CREATE", pb.CreateKeyRequest(Name="x"), "e1", caller)
            self.fails(ErrPermission, self.h.read, "ENCLAVE:LIST", pb.ListRequest(), "", caller)

    def test_no_write_proposed_on_error(self):
        before = len(self.h.proposed)
        self.assertRaises(KMSError, self.h.write, "KEY:CREATE", pb.CreateKeyRequest(Name="k1"), "e1")
        self.assertEqual(len(self.h.proposed), before)


class ClusterCommandTests(DispatchTestCase):
    def test_cluster_commands_not_here(self):
        """
        The cluster rows are the node's (L{minkms.server.membership}): here
        they are refused to anyone but the SysAdmin, and a 500 (a
        programming error) to the SysAdmin.
        """
        h = self.h
        of_kms = answers.codes() | proposals.codes()
        for command in COMMANDS:
            if command.code in of_kms:
                continue
            run = prepare_write if command.write else execute_read
            request = command.request()
            self.fails(ErrPermission, run, h.machine.state, h.ctx(ADMIN, ""), command, request)
            e = self.assertRaises(KMSError, run, h.machine.state, h.ctx(ROOT, ""), command, request)
            self.assertEqual(e.status, 500)
            self.assertIn(command.name, e.message)
        self.fails(
            bad("CLUSTER:STATUS is a cluster command: send it without an enclave"),
            self.h.read,
            "CLUSTER:STATUS",
            pb.ClusterStatusRequest(),
            "e1",
        )

    def test_wrong_direction(self):
        h = self.h
        e = self.assertRaises(
            KMSError,
            execute_read,
            h.machine,
            h.ctx(ROOT, ""),
            BY_NAME["ENCLAVE:CREATE"],
            pb.CreateEnclaveRequest(Name="x"),
        )
        self.assertEqual(e.status, 500)
        e = self.assertRaises(
            KMSError, prepare_write, h.machine, h.ctx(ROOT, ""), BY_NAME["ENCLAVE:LIST"], pb.ListRequest()
        )
        self.assertEqual(e.status, 500)

    def test_state_or_machine(self):
        h = self.h
        h.write("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="e"))
        ctx = h.ctx(ROOT, "")
        command = BY_NAME["ENCLAVE:STATUS"]
        request = pb.EnclaveStatusRequest(Name="e")
        self.assertEqual(
            execute_read(h.machine, ctx, command, request), execute_read(h.machine.state, ctx, command, request)
        )

    def test_context(self):
        self.assertTrue(CallContext(ROOT, "", ROOT, 0).is_sysadmin)
        self.assertFalse(CallContext("", "", "", 0).is_sysadmin)
        self.assertFalse(CallContext(ADMIN, "", ROOT, 0).is_sysadmin)
