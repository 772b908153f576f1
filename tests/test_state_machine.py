"""
Tests for L{minkms.state.machine} and L{minkms.state.apply}: the meaning
of every write command, its errors, and the replication guarantees
(determinism, snapshots, never raising).
"""

import gc
import json
import random

from twisted.trial import unittest

from minkms.errors import (
    ErrEnclaveExists,
    ErrEnclaveNotFound,
    ErrIdentityNotFound,
    ErrKeyExists,
    ErrKeyNotFound,
    ErrPermission,
    ErrPolicyNotFound,
    KMSError,
)
from minkms.state import changes as sc, reads, snapshot
from minkms.state.machine import StateMachine, check, result_error
from minkms.state.model import KeyVersion
from minkms.state.snapshot import SnapshotError
from tests.test_state_fixtures import ADMIN, OTHER, ROOT, T0, USER, Driver, ident, material

SECOND_ADMIN = ident("second-admin-e1")


def bad(message):
    return KMSError(400, message)


class EnclaveTests(unittest.TestCase):
    def setUp(self):
        self.d = Driver()

    def test_create(self):
        self.d.ok(sc.CreateEnclave, name="e1")
        enclave = reads.enclave(self.d.state, "e1")
        self.assertEqual((enclave.created_at, enclave.created_by), (T0 + 10**9, ROOT))

    def test_exists(self):
        self.d.ok(sc.CreateEnclave, name="e1")
        self.assertEqual(self.d.apply(sc.CreateEnclave, name="e1"), ErrEnclaveExists)

    def test_invalid_names(self):
        for name, why in (
            ("", "empty"),
            ("a/b", "contains '/' at position 2"),
            ("a*", "contains '*' at position 2"),
            ("x" * 81, "longer than 80 characters"),
            ("..", "'..' is reserved"),
            ("a\x00", "contains U+0000 at position 2"),
        ):
            self.assertEqual(self.d.apply(sc.CreateEnclave, name=name), bad(f"invalid enclave name: {why}"))
        self.assertEqual(self.d.state.enclaves, {})

    def test_delete_removes_everything(self):
        self.d.setup()
        self.d.ok(sc.CreateKey, enclave="e1", name="k")
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p", allow={"KEY:STATUS": ("*",)})
        self.d.ok(sc.DeleteEnclave, name="e1")
        self.assertNotIn("e1", self.d.state.enclaves)
        self.d.ok(sc.CreateEnclave, name="e1")
        enclave = self.d.state.enclaves["e1"]
        self.assertEqual((enclave.keys, enclave.policies, enclave.identities), ({}, {}, {}))

    def test_delete_missing(self):
        self.assertEqual(self.d.apply(sc.DeleteEnclave, name="nope"), ErrEnclaveNotFound)

    def test_sysadmin_only(self):
        self.d.setup()
        for caller in (ADMIN, USER, ident("stranger"), ""):
            self.assertEqual(self.d.apply(sc.CreateEnclave, caller=caller, name="e3"), ErrPermission)
            self.assertEqual(self.d.apply(sc.DeleteEnclave, caller=caller, name="e1"), ErrPermission)

    def test_sysadmin_flag_needs_identity(self):
        self.assertEqual(self.d.apply(sc.CreateEnclave, caller="", sysadmin=True, name="e"), ErrPermission)


class KeyTests(unittest.TestCase):
    def setUp(self):
        self.d = Driver().setup()

    def status(self, name, version=0, enclave="e1"):
        return reads.key_status(self.d.state, enclave, name, version)

    def test_create_default_type(self):
        self.d.ok(sc.CreateKey, enclave="e1", name="k", material=material("1"))
        status = self.status("k")
        self.assertEqual((status.version, status.record.key_type), (1, "AES256"))
        self.assertEqual(status.record.material, material("1"))
        self.assertEqual(status.record.created_by, ROOT)
        self.assertFalse(status.record.imported)

    def test_create_chacha(self):
        self.d.ok(sc.CreateKey, enclave="e1", name="k", key_type="ChaCha20")
        self.assertEqual(self.status("k").record.key_type, "ChaCha20")

    def test_create_exists(self):
        self.d.ok(sc.CreateKey, enclave="e1", name="k")
        self.assertEqual(self.d.apply(sc.CreateKey, enclave="e1", name="k"), ErrKeyExists)

    def test_add_version(self):
        self.d.ok(sc.CreateKey, enclave="e1", name="k", key_type="ChaCha20")
        self.d.ok(sc.CreateKey, enclave="e1", name="k", add_version=True)
        status = self.status("k")
        self.assertEqual(status.version, 2)
        self.assertEqual(status.record.key_type, "ChaCha20")
        self.assertEqual(self.status("k", 1).version, 1)

    def test_add_version_creates_missing_key(self):
        self.d.ok(sc.CreateKey, enclave="e1", name="new", add_version=True)
        self.assertEqual(self.status("new").version, 1)

    def test_create_invalid(self):
        self.assertEqual(
            self.d.apply(sc.CreateKey, enclave="e1", name="k", key_type="DES"),
            bad("invalid key type 'DES': must be AES256 or ChaCha20"),
        )
        self.assertEqual(
            self.d.apply(sc.CreateKey, enclave="e1", name="a/b"),
            bad("invalid key name: contains '/' at position 2"),
        )
        self.assertEqual(
            self.d.apply(sc.CreateKey, enclave="e1", name="k", material=b"short"),
            bad("invalid key: a AES256 key must be 32 bytes, not 5"),
        )
        self.assertEqual(self.d.state.enclaves["e1"].keys, {})

    def test_missing_enclave(self):
        self.assertEqual(self.d.apply(sc.CreateKey, enclave="nope", name="k"), ErrEnclaveNotFound)
        self.assertEqual(self.d.apply(sc.CreateKey, caller=ADMIN, enclave="nope", name="k"), ErrPermission)

    def test_import(self):
        self.d.ok(sc.ImportKey, enclave="e1", name="k", material=b"\x07" * 32)
        status = self.status("k")
        self.assertEqual((status.version, status.record.key_type), (1, "AES256"))
        self.assertTrue(status.record.imported)
        self.assertEqual(status.record.material, b"\x07" * 32)

    def test_import_exists(self):
        self.d.ok(sc.CreateKey, enclave="e1", name="k")
        self.assertEqual(self.d.apply(sc.ImportKey, enclave="e1", name="k", material=b"\x07" * 32), ErrKeyExists)
        # existence is checked before the material
        self.assertEqual(self.d.apply(sc.ImportKey, enclave="e1", name="k", material=b"\x07"), ErrKeyExists)

    def test_import_wrong_length(self):
        for size in (0, 16, 31, 33, 64):
            self.assertEqual(
                self.d.apply(sc.ImportKey, enclave="e1", name="k", material=b"\x07" * size),
                bad(f"invalid key: a AES256 key must be 32 bytes, not {size}"),
            )
        self.assertEqual(
            self.d.apply(sc.ImportKey, enclave="e1", name="k", key_type="ChaCha20", material=b"\x07"),
            bad("invalid key: a ChaCha20 key must be 32 bytes, not 1"),
        )

    def rotated(self, count=3):
        self.d.ok(sc.CreateKey, enclave="e1", name="k")
        for _ in range(count - 1):
            self.d.ok(sc.CreateKey, enclave="e1", name="k", add_version=True)

    def versions(self, name="k"):
        ring = self.d.state.enclaves["e1"].keys.get(name)
        return sorted(ring) if ring else None

    def test_delete_latest(self):
        self.rotated()
        self.d.ok(sc.DeleteKey, enclave="e1", name="k")
        self.assertEqual(self.versions(), [1, 2])
        self.assertEqual(self.status("k").version, 2)

    def test_delete_version(self):
        self.rotated()
        self.d.ok(sc.DeleteKey, enclave="e1", name="k", version=2)
        self.assertEqual(self.versions(), [1, 3])
        self.assertEqual(self.d.apply(sc.DeleteKey, enclave="e1", name="k", version=2), ErrKeyNotFound)
        self.assertEqual(self.d.apply(sc.DeleteKey, enclave="e1", name="k", version=9), ErrKeyNotFound)

    def test_delete_all(self):
        self.rotated()
        self.d.ok(sc.DeleteKey, enclave="e1", name="k", all_versions=True)
        self.assertIsNone(self.versions())
        self.assertRaises(KMSError, self.status, "k")

    def test_delete_all_with_version(self):
        self.rotated()
        self.assertEqual(
            self.d.apply(sc.DeleteKey, enclave="e1", name="k", version=1, all_versions=True),
            bad("invalid arguments: cannot delete all versions and a specific version at once"),
        )
        self.assertEqual(self.versions(), [1, 2, 3])

    def test_delete_missing(self):
        self.assertEqual(self.d.apply(sc.DeleteKey, enclave="e1", name="k"), ErrKeyNotFound)
        self.assertEqual(
            self.d.apply(sc.DeleteKey, enclave="e1", name="k", version=1, all_versions=True),
            ErrKeyNotFound,
        )

    def test_delete_only_version_removes_key(self):
        self.d.ok(sc.CreateKey, enclave="e1", name="k")
        self.d.ok(sc.DeleteKey, enclave="e1", name="k")
        self.assertIsNone(self.versions())
        self.d.ok(sc.CreateKey, enclave="e1", name="k")

    def test_versions_never_reused(self):
        self.rotated()
        self.d.ok(sc.DeleteKey, enclave="e1", name="k")
        self.d.ok(sc.CreateKey, enclave="e1", name="k", add_version=True)
        self.assertEqual(self.versions(), [1, 2, 4])
        self.d.ok(sc.DeleteKey, enclave="e1", name="k", all_versions=True)
        self.d.ok(sc.CreateKey, enclave="e1", name="k")
        self.assertEqual(self.versions(), [5])
        self.d.ok(sc.DeleteKey, enclave="e1", name="k")
        self.d.ok(sc.ImportKey, enclave="e1", name="k", material=b"\x01" * 32)
        self.assertEqual(self.versions(), [6])

    def test_enclaves_are_separate(self):
        self.d.ok(sc.CreateKey, enclave="e1", name="k")
        self.d.ok(sc.CreateKey, enclave="e2", name="k")
        self.d.ok(sc.DeleteKey, enclave="e1", name="k")
        self.assertEqual(self.status("k", enclave="e2").version, 1)


class PolicyTests(unittest.TestCase):
    def setUp(self):
        self.d = Driver().setup()

    def policy(self, name):
        return reads.policy(self.d.state, "e1", name)

    def test_create_normalizes(self):
        self.d.ok(
            sc.CreatePolicy,
            enclave="e1",
            name="p",
            allow={"key:encrypt": ("b", "a*", "", "b")},
            deny={"Key:Decrypt": ("*",)},
        )
        policy = self.policy("p")
        self.assertEqual(policy.allow, {"KEY:ENCRYPT": ("a*", "b")})
        self.assertEqual(policy.deny, {"KEY:DECRYPT": ("*",)})
        self.assertEqual(policy.created_by, ROOT)

    def test_overwrite(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p", allow={"KEY:ENCRYPT": ("*",)})
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p", allow={"KEY:MAC": ("*",)})
        self.assertEqual(self.policy("p").allow, {"KEY:MAC": ("*",)})

    def test_invalid(self):
        for allow, message in (
            ({"!INVALID:203": ("*",)}, "invalid policy: unknown action '!INVALID:203' in allow"),
            ({"KEY:IMPORT": ("*",)}, "invalid policy: unknown action 'KEY:IMPORT' in allow"),
            ({"enclave:create": ("*",)}, "invalid policy: 'ENCLAVE:CREATE' cannot be granted by a policy"),
        ):
            self.assertEqual(self.d.apply(sc.CreatePolicy, enclave="e1", name="p", allow=allow), bad(message))
        self.assertEqual(
            self.d.apply(sc.CreatePolicy, enclave="e1", name="", allow={}),
            bad("invalid policy name: empty"),
        )
        self.assertEqual(self.d.state.enclaves["e1"].policies, {})

    def test_delete(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p")
        self.d.ok(sc.DeletePolicy, enclave="e1", name="p")
        self.assertEqual(self.d.apply(sc.DeletePolicy, enclave="e1", name="p"), ErrPolicyNotFound)

    def test_delete_clears_assignments(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p")
        self.d.ok(sc.AssignPolicy, enclave="e1", identity=USER, policy="p")
        self.d.ok(sc.DeletePolicy, enclave="e1", name="p")
        self.assertEqual(self.d.state.enclaves["e1"].identities[USER].policy, "")
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p")
        self.assertEqual(self.d.state.enclaves["e1"].identities[USER].policy, "")

    def test_assign(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p")
        self.d.ok(sc.CreatePolicy, enclave="e1", name="q")
        self.d.ok(sc.AssignPolicy, enclave="e1", identity=USER, policy="p")
        self.d.ok(sc.AssignPolicy, enclave="e1", identity=USER, policy="q")
        self.assertEqual(self.d.state.enclaves["e1"].identities[USER].policy, "q")

    def test_assign_errors(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p")
        self.assertEqual(
            self.d.apply(sc.AssignPolicy, enclave="e1", identity=USER, policy="nope"),
            ErrPolicyNotFound,
        )
        self.assertEqual(
            self.d.apply(sc.AssignPolicy, enclave="e1", identity=ident("nobody"), policy="p"),
            ErrIdentityNotFound,
        )
        # OTHER lives in e2 only
        self.assertEqual(
            self.d.apply(sc.AssignPolicy, enclave="e1", identity=OTHER, policy="p"),
            ErrIdentityNotFound,
        )
        self.assertEqual(
            self.d.apply(sc.AssignPolicy, enclave="e1", identity=ADMIN, policy="p"),
            bad("cannot assign a policy to an identity with privilege Admin: only User identities have policies"),
        )
        service = ident("svc")
        self.d.ok(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=service, service_account=True)
        self.assertEqual(
            self.d.apply(sc.AssignPolicy, enclave="e1", identity=service, policy="p"),
            bad("cannot assign a policy to a service account: it acts with its parent's policy"),
        )


class IdentityTests(unittest.TestCase):
    def setUp(self):
        self.d = Driver().setup()

    def record(self, identity, enclave="e1"):
        return self.d.state.enclaves[enclave].identities.get(identity)

    def test_create(self):
        new = ident("new")
        self.d.ok(sc.CreateIdentity, enclave="e1", identity=new, tags={"team": "a.b/c-d_e"})
        record = self.record(new)
        self.assertEqual(record.privilege, "User")
        self.assertEqual(record.tags, {"team": "a.b/c-d_e"})
        self.assertEqual(record.created_by, ROOT)
        self.assertFalse(record.service_account)

    def test_privileges(self):
        for text, privilege in (("admin", "Admin"), ("Admin", "Admin"), ("user", "User"), ("", "User")):
            self.d.ok(sc.CreateIdentity, enclave="e1", identity=ident(text), privilege=text)
            self.assertEqual(self.record(ident(text)).privilege, privilege)
        self.assertEqual(
            self.d.apply(sc.CreateIdentity, enclave="e1", identity=ident("x"), privilege="Root"),
            bad("invalid privilege 'Root': must be SysAdmin, Admin or User"),
        )
        self.assertEqual(
            self.d.apply(sc.CreateIdentity, enclave="e1", identity=ident("x"), privilege="SysAdmin"),
            bad("invalid privilege: SysAdmin cannot be given to an identity in an enclave"),
        )

    def test_invalid_identity(self):
        self.assertEqual(
            self.d.apply(sc.CreateIdentity, enclave="e1", identity=""),
            bad("invalid identity: empty"),
        )
        self.assertEqual(
            self.d.apply(sc.CreateIdentity, enclave="e1", identity="h1:short"),
            bad("invalid identity 'h1:short': expected 'h1:' and 43 base64url characters"),
        )

    def test_tags(self):
        new = ident("new")
        too_many = {f"k{i}": "v" for i in range(33)}
        for tags, why in (
            (too_many, "more than 32 tags"),
            ({"": "v"}, "tag key must be 1 to 64 characters"),
            ({"k" * 65: "v"}, "tag key must be 1 to 64 characters"),
            ({"k": "v" * 257}, "value of tag 'k' is longer than 256 characters"),
            ({"k y": "v"}, "tag key 'k y' has characters outside [A-Za-z0-9._/-]"),
            ({"k": "v!"}, "value of tag 'k' has characters outside [A-Za-z0-9._/-]"),
        ):
            self.assertEqual(
                self.d.apply(sc.CreateIdentity, enclave="e1", identity=new, tags=tags),
                bad(f"invalid identity tags: {why}"),
            )
        limits = {f"k{i}": "v" * 256 for i in range(31)}
        limits["k" * 64] = ""
        self.d.ok(sc.CreateIdentity, enclave="e1", identity=new, tags=limits)

    def test_overwrite(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p")
        self.d.ok(sc.AssignPolicy, enclave="e1", identity=USER, policy="p")
        self.d.ok(sc.CreateIdentity, enclave="e1", identity=USER, tags={"a": "b"})
        self.assertEqual(self.record(USER).policy, "p")
        self.assertEqual(self.record(USER).tags, {"a": "b"})
        self.d.ok(sc.CreateIdentity, enclave="e1", identity=USER, privilege="Admin")
        self.assertEqual((self.record(USER).privilege, self.record(USER).policy), ("Admin", ""))

    def test_service_account(self):
        service = ident("svc")
        self.d.ok(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=service, service_account=True)
        record = self.record(service)
        self.assertTrue(record.service_account)
        self.assertEqual((record.parent, record.created_by, record.privilege), (ADMIN, ADMIN, "Admin"))

    def test_service_account_rules(self):
        service = ident("svc")
        self.assertEqual(
            self.d.apply(sc.CreateIdentity, enclave="e1", identity=service, service_account=True),
            bad("the SysAdmin cannot own service accounts: create them as an enclave identity"),
        )
        self.assertEqual(
            self.d.apply(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=ADMIN, service_account=True),
            bad("an identity cannot be its own service account"),
        )
        self.assertEqual(
            self.d.apply(
                sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=service, service_account=True, privilege="User"
            ),
            bad("invalid privilege User: a service account has the privilege of its parent (Admin)"),
        )
        self.d.ok(
            sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=service, service_account=True, privilege="Admin"
        )
        self.assertEqual(
            self.d.apply(sc.CreateIdentity, caller=service, enclave="e1", identity=ident("svc2"), service_account=True),
            ErrPermission,
        )
        self.assertEqual(
            self.d.apply(
                sc.CreateIdentity, caller=USER, enclave="e1", identity=ADMIN, service_account=True, sysadmin=False
            ),
            ErrPermission,
        )

    def test_service_account_creates_no_identity(self):
        """
        Nothing a service account makes could outlive it: it may not
        create, overwrite or mint identities of any privilege.
        """
        service = ident("svc")
        self.d.ok(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=service, service_account=True)
        for target, privilege in ((ident("minted"), "Admin"), (ident("minted"), "User"), (USER, "Admin")):
            self.assertEqual(
                self.d.apply(
                    sc.CreateIdentity,
                    caller=service,
                    enclave="e1",
                    identity=target,
                    privilege=privilege,
                    sysadmin=False,
                ),
                ErrPermission,
            )
        self.assertIsNone(self.record(ident("minted")))
        self.assertEqual(self.record(USER).privilege, "User")
        self.d.ok(sc.DeleteIdentity, enclave="e1", identity=ADMIN)
        self.assertEqual([r.identity for r in self.d.state.enclaves["e1"].identities.values()], [USER])

    def test_identity_in_one_enclave_only(self):
        """Spec 1.6: e1's Admin cannot register e2's Admin, nor can the SysAdmin."""
        for caller in (ADMIN, ROOT):
            self.assertEqual(
                self.d.apply(sc.CreateIdentity, caller=caller, enclave="e1", identity=OTHER, privilege="Admin"),
                KMSError(409, "identity already exists in another enclave"),
            )
        self.assertEqual(
            self.d.apply(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=OTHER, service_account=True),
            KMSError(409, "identity already exists in another enclave"),
        )
        self.assertIsNone(self.record(OTHER))
        self.d.ok(sc.CreateIdentity, enclave="e1", identity=USER, privilege="Admin")
        self.d.ok(sc.DeleteEnclave, name="e2")
        self.d.ok(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=OTHER)
        self.assertEqual(self.record(OTHER).privilege, "User")

    def test_parent_cannot_become_service_account(self):
        service = ident("svc")
        self.d.ok(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=service, service_account=True)
        self.d.ok(sc.CreateIdentity, enclave="e1", identity=SECOND_ADMIN, privilege="Admin")
        self.assertEqual(
            self.d.apply(sc.CreateIdentity, caller=SECOND_ADMIN, enclave="e1", identity=ADMIN, service_account=True),
            bad(f"identity '{ADMIN}' owns service accounts and cannot become one"),
        )

    def test_delete(self):
        self.d.ok(sc.DeleteIdentity, enclave="e1", identity=USER)
        self.assertIsNone(self.record(USER))
        self.assertEqual(self.d.apply(sc.DeleteIdentity, enclave="e1", identity=USER), ErrIdentityNotFound)

    def test_delete_takes_service_accounts(self):
        mine, theirs = ident("svc-admin"), ident("svc-other")
        self.d.ok(sc.CreateIdentity, enclave="e1", identity=SECOND_ADMIN, privilege="Admin")
        self.d.ok(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=mine, service_account=True)
        self.d.ok(sc.CreateIdentity, caller=SECOND_ADMIN, enclave="e1", identity=theirs, service_account=True)
        self.d.ok(sc.DeleteIdentity, enclave="e1", identity=ADMIN)
        self.assertIsNone(self.record(mine))
        self.assertIsNotNone(self.record(theirs))


class ApplyAuthorizationTests(unittest.TestCase):
    """Apply re-checks permissions: the caller may have lost them meanwhile."""

    def setUp(self):
        self.d = Driver().setup()

    def test_identity_deleted_before_apply(self):
        pending = self.d.command(sc.CreateKey, caller=ADMIN, enclave="e1", name="k")
        self.assertIsNone(check(self.d.state, pending))
        self.d.ok(sc.DeleteIdentity, enclave="e1", identity=ADMIN)
        self.assertEqual(self.d.machine.apply(pending.encode()), ErrPermission)
        self.assertEqual(self.d.state.enclaves["e1"].keys, {})

    def test_policy_changed_before_apply(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p", allow={"KEY:CREATE": ("*",)})
        self.d.ok(sc.AssignPolicy, enclave="e1", identity=USER, policy="p")
        pending = self.d.command(sc.CreateKey, caller=USER, enclave="e1", name="k")
        self.assertIsNone(check(self.d.state, pending))
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p", deny={"KEY:CREATE": ("k*",)})
        self.assertEqual(self.d.machine.apply(pending), ErrPermission)

    def test_concurrent_create(self):
        first = self.d.command(sc.CreateKey, enclave="e1", name="k")
        second = self.d.command(sc.CreateKey, enclave="e1", name="k")
        self.assertIsNone(self.d.machine.apply(first.encode()))
        before = self.d.machine.snapshot()
        self.assertEqual(self.d.machine.apply(second.encode()), ErrKeyExists)
        self.assertEqual(self.d.machine.snapshot(), before)


class ReplicationTests(unittest.TestCase):
    def busy(self) -> Driver:
        d = Driver().setup()
        d.ok(sc.CreateKey, enclave="e1", name="k")
        d.ok(sc.CreateKey, enclave="e1", name="k", add_version=True)
        d.ok(sc.ImportKey, enclave="e2", name="imp", key_type="ChaCha20", material=b"\x09" * 32)
        d.ok(sc.CreateKey, enclave="e1", name="gone")
        d.ok(sc.DeleteKey, enclave="e1", name="gone", all_versions=True)
        d.ok(
            sc.CreatePolicy,
            enclave="e1",
            name="p",
            allow={"KEY:ENCRYPT": ("k*", "*")},
            deny={"KEY:DECRYPT": ("secret",)},
        )
        d.ok(sc.AssignPolicy, enclave="e1", identity=USER, policy="p")
        d.ok(
            sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=ident("svc"), service_account=True, tags={"a": "1"}
        )
        d.apply(sc.CreateKey, enclave="e1", name="k")  # fails: exists
        return d

    def test_determinism(self):
        d = self.busy()
        replica = StateMachine()
        for data in d.log:
            replica.apply(data)
        self.assertEqual(replica.snapshot(), d.machine.snapshot())
        self.assertEqual(replica.digest(), d.machine.digest())
        self.assertEqual(replica.state, d.state)

    def test_snapshot_round_trip(self):
        d = self.busy()
        data = d.machine.snapshot()
        restored = StateMachine()
        restored.restore(data)
        self.assertEqual(restored.state, d.state)
        self.assertEqual(restored.snapshot(), data)
        self.assertEqual(restored.digest(), d.machine.digest())
        # and it keeps working: versions continue, retired names are remembered
        command = d.command(sc.CreateKey, enclave="e1", name="gone")
        for machine in (restored, d.machine):
            self.assertIsNone(machine.apply(command))
            self.assertEqual(reads.key_status(machine.state, "e1", "gone").version, 2)
        self.assertEqual(restored.digest(), d.machine.digest())

    def test_frozen_copy_keeps_the_state_of_its_time(self):
        """A frozen machine dumps the state as it was, whatever is applied after; its bytes equal a dump then."""
        d = self.busy()
        then = d.machine.snapshot()
        frozen = d.machine.frozen()
        d.ok(sc.CreateKey, enclave="e1", name="later")
        d.ok(sc.CreateKey, enclave="e1", name="k", add_version=True)
        d.ok(sc.DeleteKey, enclave="e1", name="k", all_versions=True)
        d.ok(sc.DeleteEnclave, name="e2")
        self.assertEqual(frozen.snapshot(), then)
        self.assertNotEqual(d.machine.snapshot(), then)

    def test_snapshot_is_canonical_json(self):
        data = self.busy().machine.snapshot()
        self.assertEqual(data, json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode())
        self.assertEqual(StateMachine().snapshot(), b'{"enclaves":{},"format":1}')

    def test_snapshot_pieces_make_the_snapshot(self):
        """In pieces of any size, the snapshot is the same canonical bytes; no piece holds more keys than asked."""
        d = self.busy()
        for n in (7, 3, 11, 0, 5, 2, 13, 1, 8):
            d.ok(sc.CreateKey, enclave="e2", name=f"more-{n}")
        whole = d.machine.snapshot()
        for per_piece in (1, 2, 3, 128):
            for sort_run in (1, 2, 5, 4096):
                pieces = list(snapshot.dump_pieces(d.state, per_piece, sort_run))
                self.assertEqual(b"".join(pieces), whole)
                self.assertLessEqual(max(piece.count(b'"highest"') for piece in pieces), per_piece)
        self.assertEqual(b"".join(StateMachine().snapshot_pieces()), b'{"enclaves":{},"format":1}')

    def test_keys_are_invisible_to_the_cycle_collector(self):
        """
        Keys add no object the cycle collector tracks, so its full
        collections cost the same however many keys a node holds.
        """
        d = self.busy()
        gc.collect()
        before = len(gc.get_objects())
        for n in range(2000):
            d.ok(sc.CreateKey, enclave="e1", name=f"many-{n}")
            if n % 2:
                d.ok(sc.CreateKey, enclave="e1", name=f"many-{n}", add_version=True)
        reads.encrypt(d.state, "e1", "many-0", 0, b"p", b"")
        d.log.clear()
        gc.collect()
        self.assertLess(len(gc.get_objects()) - before, 100)
        restored = StateMachine()
        restored.restore(d.machine.snapshot())
        gc.collect()
        self.assertFalse(any(gc.is_tracked(ring) for ring in restored.state.enclaves["e1"].keys.values()))

    def test_key_version_packing(self):
        for record in (
            KeyVersion(b"\x01" * 32, "AES256", 1_700_000_000_000_000_000, ROOT),
            KeyVersion(b"", "ChaCha20", -1, "", imported=True),
            KeyVersion(b"\xff" * 300, "ChaCha20", 2**70, "h1:\u00e9\u6f22", imported=True),
            KeyVersion(b"x", "AES256", 0, "h1:x"),
        ):
            self.assertEqual(KeyVersion.unpack(record.pack()), record)

    def test_digest_differs(self):
        a, b = self.busy(), self.busy()
        self.assertEqual(a.machine.digest(), b.machine.digest())
        b.ok(sc.CreateKey, enclave="e1", name="x")
        self.assertNotEqual(a.machine.digest(), b.machine.digest())

    def test_restore_leaves_the_collector_as_it_was(self):
        """Restoring pauses Python's cycle collector and gives it back as found, also after a bad snapshot."""
        data = self.busy().machine.snapshot()
        self.addCleanup(gc.enable)
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            StateMachine().restore(data)
            self.assertEqual(gc.isenabled(), enabled)
            self.assertRaises(SnapshotError, StateMachine().restore, b"{")
            self.assertEqual(gc.isenabled(), enabled)

    def test_restore_garbage(self):
        machine = self.busy().machine
        before = machine.snapshot()
        for data in (b"", b"{}", b"[]", b'{"format":2}', before[:-1], before.replace(b'"format":1', b'"format":"1"')):
            self.assertRaises(SnapshotError, machine.restore, data)
        self.assertEqual(machine.snapshot(), before)

    def test_restore_command(self):
        d = self.busy()
        backup = d.machine.snapshot()
        d.ok(sc.CreateKey, enclave="e1", name="after-backup")
        self.assertEqual(d.apply(sc.RestoreState, caller=ADMIN, state=backup), ErrPermission)
        self.assertEqual(d.apply(sc.RestoreState, state=b"junk"), bad("invalid backup: not a state snapshot"))
        d.ok(sc.RestoreState, state=backup)
        self.assertNotIn("after-backup", d.state.enclaves["e1"].keys)
        self.assertIn("k", d.state.enclaves["e1"].keys)

    def test_apply_never_raises(self):
        d = self.busy()
        before = d.machine.snapshot()
        rng = random.Random(7)
        garbage = [b"", b"\x00", b"{}", b"null", b"\xff" * 10, b'{"op":"key.create","v":1}', object(), None, 42, "text"]
        for data in d.log:
            for _ in range(20):
                mutated = bytearray(data)
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                garbage.append(bytes(mutated))
        for item in garbage:
            result = d.machine.apply(item)
            if result is None:
                # a mutation that still decodes to a valid command is fine
                before = d.machine.snapshot()
                continue
            self.assertIsInstance(result, KMSError)
            self.assertEqual(d.machine.snapshot(), before)

    def test_garbage_result(self):
        machine = StateMachine()
        error = machine.apply(b"nonsense")
        self.assertEqual(error.status, 400)
        self.assertTrue(error.message.startswith("invalid state command: "), error.message)
        self.assertEqual(machine.apply(None).status, 500)

    def test_result_error(self):
        self.assertIsNone(result_error(None))
        self.assertIs(result_error(ErrKeyExists), ErrKeyExists)
        self.assertIsNone(result_error("something"))
