"""
What one tenant can do to a node and to other tenants (issue 11, items 1
and 4), over real TLS against an in-process node: a policy cannot stall
the node, cannot grow without bound, and no identity outlives the service
account that would have made it or lives in two enclaves.
"""

from minkms.errors import ErrIdentityNotFound, ErrPermission, KMSError
from minkms.names import MAX_NAME
from minkms.state.policy import MAX_PATTERNS, MAX_STARS
from minkms.wire import kms_pb2 as pb
from tests.test_conformance import (
    IDENTITY_CREATE,
    IDENTITY_DELETE,
    IDENTITY_STATUS,
    KEY_CREATE,
    KEY_ENCRYPT,
    KEY_STATUS,
    POLICY_CREATE,
    ServerTestCase,
    body_of,
)

WORST_PATTERN = "*a" * MAX_STARS + "b"
"""The most stars a pattern may hold, each before an C{a}, then a C{b}."""


class PolicyCostTests(ServerTestCase):
    """An enclave Admin's policy costs every caller it governs little."""

    async def setUp(self):
        await super().setUp()
        for name in ("e1", "e2"):
            await self.enclave(name)
        self.admin = self.client(await self.identity("e1", "Admin"))
        self.other_admin = self.client(await self.identity("e2", "Admin"))

    async def test_worst_pattern_against_longest_name(self):
        """
        The pattern that made a backtracking matcher run for minutes is
        decided right, for a name of the longest length, and the node goes
        on serving the other enclave.
        """
        names = ("a" * MAX_NAME, "a" * (MAX_NAME - 1) + "b")
        for name in names:
            await self.key(name)
        await self.policy(
            "stall",
            allow={"KEY:ENCRYPT": ["*"]},
            deny={"KEY:ENCRYPT": [WORST_PATTERN]},
            client=self.admin,
        )
        user = await self.identity("e1", "User", client=self.admin)
        await self.assign(user.identity, "stall")
        user_client = self.client(user)
        sealed = await self.call(
            KEY_ENCRYPT, pb.EncryptRequest(Name=names[0], Plaintext=b"x"), "e1", client=user_client
        )
        self.assertEqual(sealed.Version, 1)
        await self.fails(
            ErrPermission,
            self.call(KEY_ENCRYPT, pb.EncryptRequest(Name=names[1], Plaintext=b"x"), "e1", client=user_client),
        )
        await self.call(KEY_CREATE, pb.CreateKeyRequest(Name="k"), "e2", client=self.other_admin)
        [status] = await self.send(KEY_STATUS, [pb.KeyStatusRequest(Name="k")], "e2", client=self.other_admin)
        self.assertEqual(status.Version, 1)

    async def test_large_policy_refused(self):
        """The policy of the report (55,000 patterns, 715 KB) gets one clear 400."""
        request = pb.CreatePolicyRequest(Name="huge")
        rule_set = request.Deny["KEY:ENCRYPT"]
        for i in range(55_000):
            rule_set.Rules[f"k{i:05d}*x"].SetInParent()
        body = body_of(POLICY_CREATE, request)
        self.assertGreater(len(body), 700_000)
        response = await self.raw().kms(body, "e1")
        self.assertError(response, 400, f"invalid policy: 55000 patterns, at most {MAX_PATTERNS} are allowed")
        await self.fails(
            KMSError(400, f"invalid policy: a pattern of 'KEY:ENCRYPT' has more than {MAX_STARS} '*'"),
            self.policy("stars", deny={"KEY:ENCRYPT": ["*a" * (MAX_STARS + 1)]}, client=self.admin),
        )
        await self.fails(
            KMSError(400, "invalid policy: a pattern of 'KEY:STATUS' is longer than 128 characters"),
            self.policy("long", allow={"KEY:STATUS": ["p" * 129]}, client=self.admin),
        )
        await self.policy(
            "largest",
            allow={"KEY:STATUS": [f"k{i}*" for i in range(MAX_PATTERNS)]},
            client=self.admin,
        )


class IdentityRightsTests(ServerTestCase):
    """Rights end with their source; an identity belongs to one enclave."""

    async def setUp(self):
        await super().setUp()
        for name in ("e1", "e2"):
            await self.enclave(name)

    async def test_service_account_mints_no_admin(self):
        """
        The report: an Admin's service account created a plain Admin that
        kept full access after the parent was deleted.  Now the service
        account may not create identities at all.
        """
        admin = await self.identity("e1", "Admin")
        service = await self.identity("e1", "", client=self.client(admin), service_account=True)
        await self.fails(ErrPermission, self.identity("e1", "Admin", client=self.client(service)))
        await self.call(IDENTITY_DELETE, pb.DeleteIdentityRequest(Identity=admin.identity), "e1")
        await self.fails(
            ErrIdentityNotFound, self.call(IDENTITY_STATUS, pb.IdentityRequest(Identity=service.identity), "e1")
        )
        await self.fails(
            ErrPermission, self.call(KEY_CREATE, pb.CreateKeyRequest(Name="k"), "e1", client=self.client(service))
        )

    async def test_identity_of_another_enclave(self):
        """e1's Admin cannot register e2's Admin in e1 (spec 1.6)."""
        admin1 = await self.identity("e1", "Admin")
        admin2 = await self.identity("e2", "Admin")
        await self.fails(
            KMSError(409, "identity already exists in another enclave"),
            self.identity("e1", "Admin", api_key=admin2.text, client=self.client(admin1)),
        )
        await self.fails(
            ErrPermission, self.call(KEY_CREATE, pb.CreateKeyRequest(Name="k"), "e1", client=self.client(admin2))
        )
        await self.call(IDENTITY_CREATE, pb.CreateIdentityRequest(Identity=admin1.identity, Privilege="User"), "e1")
