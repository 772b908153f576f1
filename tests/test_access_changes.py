"""
A node remembers who a caller is between requests (the read path resolves
each caller once, issue 13): a change of identities or policies must still
take effect on the caller's very next request, on the connection it keeps
open, as MinIO does.
"""

from minkms.errors import ErrPermission
from minkms.wire import kms_pb2 as pb
from tests.test_conformance import (
    IDENTITY_DELETE,
    KEY_DECRYPT,
    KEY_GENERATE,
    POLICY_DELETE,
    ServerTestCase,
)

AAD = b'{"bucket":"photos","object":"a.jpg"}'


class AccessChangeTests(ServerTestCase):
    """Revocations and policy changes apply to the next request on an open connection."""

    async def setUp(self):
        await super().setUp()
        await self.enclave("e1")
        await self.key("k1")
        await self.key("k2")
        await self.policy("minio", allow={"KEY:GENERATE": ["k1"], "KEY:DECRYPT": ["k1"]})
        self.user = await self.identity("e1", "User")
        await self.assign(self.user.identity, "minio")
        self.minio = self.client(self.user)

    def connections(self) -> list:
        """
        The user's idle keep-alive connections to the node: with one, the
        next request goes on it.
        """
        return [c for idle in self.minio._pool._connections.values() for c in idle]

    async def generate(self, name="k1") -> pb.GenerateKeyResponse:
        return await self.call(
            KEY_GENERATE, pb.GenerateKeyRequest(Name=name, AssociatedData=AAD), "e1", client=self.minio
        )

    async def decrypt(self, ciphertext: bytes, name="k1") -> pb.DecryptResponse:
        request = pb.DecryptRequest(Name=name, Ciphertext=ciphertext, AssociatedData=AAD)
        return await self.call(KEY_DECRYPT, request, "e1", client=self.minio)

    async def test_deleted_identity(self):
        """Once its identity is deleted, the caller's next request on the same connection is refused."""
        dek = await self.generate()
        self.assertEqual((await self.decrypt(dek.Ciphertext)).Plaintext, dek.Plaintext)
        self.assertEqual(len(self.connections()), 1)
        await self.call(IDENTITY_DELETE, pb.DeleteIdentityRequest(Identity=self.user.identity), "e1")
        await self.fails(ErrPermission, self.decrypt(dek.Ciphertext))
        await self.fails(ErrPermission, self.generate())

    async def test_changed_policy(self):
        """A policy replaced by another version decides the next request on the same connection."""
        dek = await self.generate()
        await self.fails(ErrPermission, self.generate("k2"))
        [connection] = self.connections()
        await self.policy("minio", allow={"KEY:GENERATE": ["k2"]})
        await self.fails(ErrPermission, self.decrypt(dek.Ciphertext))
        self.assertEqual((await self.generate("k2")).Version, 1)
        self.assertEqual(self.connections(), [connection])

    async def test_deleted_policy(self):
        """Deleting the caller's policy takes its rights away at once."""
        await self.generate()
        await self.call(POLICY_DELETE, pb.DeletePolicyRequest(Name="minio"), "e1")
        await self.fails(ErrPermission, self.generate())

    async def test_new_identity_served_at_once(self):
        """A caller refused before its identity existed is served once it does."""
        await self.call(IDENTITY_DELETE, pb.DeleteIdentityRequest(Identity=self.user.identity), "e1")
        await self.fails(ErrPermission, self.generate())
        await self.identity("e1", "User", api_key=self.user.text)
        await self.assign(self.user.identity, "minio")
        self.assertEqual((await self.generate()).Version, 1)
