"""Tests for L{minkms.state.authz}: the authorization matrix."""

from twisted.trial import unittest

from minkms.errors import ErrEnclaveNotFound, ErrPermission, KMSError
from minkms.state import authz, changes as sc
from tests.test_state_fixtures import ADMIN, OTHER, ROOT, USER, Driver, ident

SVC = ident("user-service-account")
ADMIN_SVC = ident("admin-service-account")
STRANGER = ident("stranger")


class MatrixTests(unittest.TestCase):
    def setUp(self):
        self.d = Driver().setup()
        self.d.ok(
            sc.CreatePolicy,
            enclave="e1",
            name="p",
            allow={"KEY:ENCRYPT": ("k*",), "KEY:DECRYPT": ("*",), "KEY:LIST": ("k*",), "IDENTITY:CREATE": ("*",)},
            deny={"KEY:DECRYPT": ("k-secret*",)},
        )
        self.d.ok(sc.AssignPolicy, enclave="e1", identity=USER, policy="p")
        self.d.ok(sc.CreateIdentity, caller=USER, sysadmin=False, enclave="e1", identity=SVC, service_account=True)
        self.d.ok(sc.CreateIdentity, caller=ADMIN, enclave="e1", identity=ADMIN_SVC, service_account=True)

    def allowed(self, caller, enclave, action, argument):
        try:
            authz.authorize(self.d.state, caller, caller == ROOT, enclave, action, argument)
        except KMSError as e:
            if e != ErrPermission:
                raise
            return False
        return True

    def test_sysadmin(self):
        for enclave, action in (
            (None, "ENCLAVE:CREATE"),
            (None, "CLUSTER:STATUS"),
            ("e1", "KEY:DECRYPT"),
            ("e2", "IDENTITY:DELETE"),
        ):
            self.assertTrue(self.allowed(ROOT, enclave, action, "anything"))

    def test_sysadmin_missing_enclave(self):
        e = self.assertRaises(KMSError, authz.authorize, self.d.state, ROOT, True, "nope", "KEY:STATUS", "k")
        self.assertEqual(e, ErrEnclaveNotFound)

    def test_cluster_actions_sysadmin_only(self):
        for caller in (ADMIN, USER, SVC, ADMIN_SVC, OTHER, STRANGER, ""):
            for action in ("ENCLAVE:CREATE", "ENCLAVE:LIST", "CLUSTER:STATUS", "CLUSTER:ADDNODE"):
                self.assertFalse(self.allowed(caller, None, action, ""))
                self.assertFalse(self.allowed(caller, "e1", action, ""))

    def test_admin_own_enclave(self):
        for action in ("KEY:CREATE", "KEY:DECRYPT", "POLICY:CREATE", "IDENTITY:DELETE", "KEY:LISTVERSIONS"):
            self.assertTrue(self.allowed(ADMIN, "e1", action, "whatever"))
            self.assertTrue(self.allowed(ADMIN_SVC, "e1", action, "whatever"))

    def test_admin_other_enclave(self):
        self.assertFalse(self.allowed(ADMIN, "e2", "KEY:STATUS", "k"))
        self.assertFalse(self.allowed(OTHER, "e1", "KEY:STATUS", "k"))
        self.assertTrue(self.allowed(OTHER, "e2", "KEY:STATUS", "k"))

    def test_missing_enclave_hidden_from_non_sysadmin(self):
        self.assertFalse(self.allowed(ADMIN, "nope", "KEY:STATUS", "k"))

    def test_user_policy(self):
        for caller in (USER, SVC):
            self.assertTrue(self.allowed(caller, "e1", "KEY:ENCRYPT", "k1"))
            self.assertFalse(self.allowed(caller, "e1", "KEY:ENCRYPT", "other"))
            self.assertTrue(self.allowed(caller, "e1", "KEY:DECRYPT", "k1"))
            self.assertFalse(self.allowed(caller, "e1", "KEY:DECRYPT", "k-secret-1"))
            self.assertFalse(self.allowed(caller, "e1", "KEY:CREATE", "k1"))
            self.assertFalse(self.allowed(caller, "e1", "KEY:MAC", "k1"))

    def test_user_without_policy(self):
        self.d.ok(sc.CreateIdentity, enclave="e1", identity=STRANGER)
        self.assertFalse(self.allowed(STRANGER, "e1", "KEY:STATUS", "k"))

    def test_policy_deleted(self):
        self.d.ok(sc.DeletePolicy, enclave="e1", name="p")
        self.assertFalse(self.allowed(USER, "e1", "KEY:ENCRYPT", "k1"))
        self.assertFalse(self.allowed(SVC, "e1", "KEY:ENCRYPT", "k1"))

    def test_policy_changes_apply_at_once(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p", allow={"KEY:MAC": ("*",)})
        self.assertFalse(self.allowed(USER, "e1", "KEY:ENCRYPT", "k1"))
        self.assertTrue(self.allowed(SVC, "e1", "KEY:MAC", "k1"))

    def test_unknown_and_empty_callers(self):
        for caller in (STRANGER, "", "h1:bogus", "not an identity"):
            self.assertFalse(self.allowed(caller, "e1", "KEY:STATUS", "k"))
        e = self.assertRaises(KMSError, authz.authorize, self.d.state, "", True, "e1", "KEY:STATUS", "k")
        self.assertEqual(e, ErrPermission)

    def test_service_account_dies_with_parent(self):
        self.d.ok(sc.DeleteIdentity, enclave="e1", identity=USER)
        self.assertFalse(self.allowed(SVC, "e1", "KEY:ENCRYPT", "k1"))
        self.assertNotIn(SVC, self.d.state.enclaves["e1"].identities)

    def test_service_account_follows_parent_privilege(self):
        self.d.ok(sc.CreateIdentity, enclave="e1", identity=ADMIN, privilege="User")
        self.assertFalse(self.allowed(ADMIN_SVC, "e1", "KEY:CREATE", "k"))

    def test_list_filters(self):
        state = self.d.state
        self.assertIsNone(authz.authorize_list(state, ADMIN, False, "e1", "KEY:LIST", ""))
        self.assertIsNone(authz.authorize_list(state, ROOT, True, "e1", "KEY:LIST", ""))
        visible = authz.authorize_list(state, USER, False, "e1", "KEY:LIST", "")
        self.assertTrue(visible("k1"))
        self.assertFalse(visible("x"))
        self.assertIsNotNone(authz.authorize_list(state, SVC, False, "e1", "KEY:LIST", "k"))
        for prefix in ("x", "a"):
            e = self.assertRaises(KMSError, authz.authorize_list, state, USER, False, "e1", "KEY:LIST", prefix)
            self.assertEqual(e, ErrPermission)
        e = self.assertRaises(KMSError, authz.authorize_list, state, USER, False, "e1", "POLICY:LIST", "")
        self.assertEqual(e, ErrPermission)
        e = self.assertRaises(KMSError, authz.authorize_list, state, ADMIN, False, None, "ENCLAVE:LIST", "")
        self.assertEqual(e, ErrPermission)

    def test_list_deny_covering_prefix(self):
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p", allow={"KEY:LIST": ("*",)}, deny={"KEY:LIST": ("secret-*",)})
        state = self.d.state
        visible = authz.authorize_list(state, USER, False, "e1", "KEY:LIST", "")
        self.assertFalse(visible("secret-1"))
        self.assertTrue(visible("public"))
        authz.authorize_list(state, USER, False, "e1", "KEY:LIST", "secret")
        e = self.assertRaises(KMSError, authz.authorize_list, state, USER, False, "e1", "KEY:LIST", "secret-")
        self.assertEqual(e, ErrPermission)


class IdentityCreationTests(unittest.TestCase):
    """Who may create which identities (recommendations of spec section 6.5)."""

    def setUp(self):
        self.d = Driver().setup()
        self.d.ok(sc.CreatePolicy, enclave="e1", name="p", allow={"IDENTITY:CREATE": ("*",)})
        self.d.ok(sc.AssignPolicy, enclave="e1", identity=USER, policy="p")

    def create(self, caller, identity, **fields):
        return self.d.apply(sc.CreateIdentity, caller=caller, enclave="e1", identity=identity, **fields)

    def test_admin_creates_admins_and_users(self):
        self.assertIsNone(self.create(ADMIN, ident("a2"), privilege="Admin"))
        self.assertIsNone(self.create(ADMIN, ident("u2"), privilege="User"))

    def test_user_creates_only_own_service_accounts(self):
        self.assertEqual(self.create(USER, ident("u2")), ErrPermission)
        self.assertEqual(self.create(USER, ident("a2"), privilege="Admin"), ErrPermission)
        self.assertIsNone(self.create(USER, SVC, service_account=True))
        self.assertEqual(self.d.state.enclaves["e1"].identities[SVC].parent, USER)
        # overwriting its own service account is fine, anyone else's is not
        self.assertIsNone(self.create(USER, SVC, service_account=True, tags={"a": "b"}))
        self.assertIsNone(self.create(ADMIN, ADMIN_SVC, service_account=True))
        self.assertEqual(self.create(USER, ADMIN_SVC, service_account=True), ErrPermission)
        self.assertEqual(self.create(USER, ADMIN, service_account=True), ErrPermission)

    def test_user_needs_policy(self):
        self.d.ok(sc.DeletePolicy, enclave="e1", name="p")
        self.assertEqual(self.create(USER, SVC, service_account=True), ErrPermission)
