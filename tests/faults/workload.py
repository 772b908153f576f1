"""
The fault suite's clients: each request goes to a random node, as kms-go
does, and every operation is recorded with its invocation and completion
time and what came back.

Outcomes: C{ok}; C{rejected}: a client error (4xx), which the models
predict when it is one of L{MODEL_ERRORS}; C{failed} when the write surely
did not take effect (a refused connection, a 503 that says so); C{unknown} when
it may have (a timeout, a lost connection, any other 503, a 500).  Reads
that fail are kept for the figures but not checked.
"""

import base64
import hashlib
import os
import random
import time

import attrs

from minkms import crypto
from minkms.client import ClientError
from minkms.errors import (
    ErrIdentityNotFound,
    ErrKeyExists,
    ErrKeyNotFound,
    ErrPolicyNotFound,
    KMSError,
)
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import (
    IDENTITY_CREATE,
    IDENTITY_DELETE,
    IDENTITY_STATUS,
    KEY_CREATE,
    KEY_DECRYPT,
    KEY_DELETE,
    KEY_ENCRYPT,
    KEY_GENERATE,
    KEY_IMPORT,
    KEY_LIST,
    KEY_STATUS,
    POLICY_ASSIGN,
    POLICY_CREATE,
    POLICY_DELETE,
    POLICY_GET,
)

OK, REJECTED, FAILED, UNKNOWN = "ok", "rejected", "failed", "unknown"

KEY_WRITES = ("import", "create", "rotate", "delete")
KEY_READS = ("status", "generate", "encrypt")
IDENTITY_WRITES = ("id_create", "id_delete", "assign")
POLICY_WRITES = ("pol_create", "pol_delete")
WRITES = frozenset(KEY_WRITES + IDENTITY_WRITES + POLICY_WRITES)

MODEL_ERRORS = frozenset(e.message for e in (ErrKeyExists, ErrKeyNotFound, ErrIdentityNotFound, ErrPolicyNotFound))
"""Client errors that the checker's models predict; a write answered
with one of them surely did not take effect."""

NOT_APPLIED_503 = ("not applied", "no leader", "not the leader", "write not accepted")
"""Phrases of a 503 that says the write was surely not applied."""

KEY_TYPE = crypto.key_type("")

# A mix weighted towards reads, as a KMS serves them.
MIX = [
    ("import", 6),
    ("create", 5),
    ("rotate", 5),
    ("delete", 4),
    ("status", 10),
    ("generate", 10),
    ("encrypt", 8),
    ("list", 3),
    ("id_create", 3),
    ("id_delete", 2),
    ("assign", 3),
    ("id_status", 5),
    ("pol_create", 3),
    ("pol_delete", 2),
    ("pol_get", 4),
]


@attrs.define
class Record:
    """One operation as its client saw it."""

    op_id: int
    client: int
    node: str
    kind: str
    name: str
    arg: object
    invoked: int
    completed: int | None = None
    outcome: str = UNKNOWN
    value: object = None
    status: int | None = None
    error: str = ""

    @property
    def write(self) -> bool:
        """Whether the operation may change the state."""
        return self.kind in WRITES


def identity_name(i: int) -> str:
    """An C{h1:} identity, fixed per index."""
    digest = hashlib.sha256(f"fault-identity-{i}".encode()).digest()
    return "h1:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Names:
    """The objects the workload touches: small pools, so that clients collide."""

    def __init__(self, keys=16, identities=6, policies=6) -> None:
        self.keys = [f"k{i}" for i in range(keys)]
        self.identities = [identity_name(i) for i in range(identities)]
        self.policies = [f"q{i}" for i in range(policies)]
        self.assignable = ["fixed-a", "fixed-b"]
        """Policies created before the run and never deleted: deleting a
        policy clears it from identities, which per-object checking cannot see."""

    def pool(self, kind: str) -> list[str]:
        """The names an operation of C{kind} picks from."""
        if kind in ("id_create", "id_delete", "assign", "id_status"):
            return self.identities
        if kind.startswith("pol_"):
            return self.policies
        return self.keys


def classify(error: Exception) -> tuple[str, int | None, str]:
    """(outcome, HTTP status or None, text) of a failed request."""
    if isinstance(error, KMSError):
        text = error.message
        if error.status == 503:
            return (FAILED if any(p in text for p in NOT_APPLIED_503) else UNKNOWN), 503, text
        if error.status >= 500:
            return UNKNOWN, error.status, text
        return REJECTED, error.status, text
    text = str(error)
    if isinstance(error, ClientError) and "connection refused" in text:
        return FAILED, None, text
    return UNKNOWN, None, text


def material_id(materials: list[tuple[int, bytes]], version: int, ciphertext: bytes) -> int | None:
    """Which imported material (by its import's op ID) made C{ciphertext}, if any."""
    for mid, material in materials:
        try:
            crypto.decrypt(material, KEY_TYPE, version, ciphertext, b"")
        except KMSError:
            continue
        return mid
    return None


class Workload:
    """
    C{clients} concurrent clients sending the L{MIX} to random nodes until
    told to stop; L{records} is the history.
    """

    def __init__(self, cluster, seed: int, clients: int = 8, names: Names | None = None) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.clients = clients
        self.names = names or Names()
        self.records: list[Record] = []
        self.materials: dict[str, list[tuple[int, bytes]]] = {}
        self.decrypt_mismatches: list[str] = []
        self.stopping = False
        self._client = cluster.client()
        self._kinds = [k for k, w in MIX for _ in range(w)]

    def now(self) -> int:
        """The clock of the history: monotonic nanoseconds."""
        return time.monotonic_ns()

    async def setup(self) -> None:
        """Create the never-deleted policies identities are assigned."""
        for policy in self.names.assignable:
            await self._client.call(
                POLICY_CREATE, _policy(policy, 0), enclave=self.cluster.ENCLAVE, host=self.cluster.nodes[0].address
            )

    async def run(self) -> None:
        """Run every client until L{stopping} is set."""
        from twisted.internet import defer

        await defer.gatherResults(
            [defer.ensureDeferred(self._loop(i)) for i in range(self.clients)], consumeErrors=True
        )

    async def close(self) -> None:
        """Close the clients' connections."""
        await self._client.close()

    async def _loop(self, client: int) -> None:
        from tests.faults.cluster import sleep

        rng = random.Random(self.rng.random())
        while not self.stopping:
            node = rng.choice(self.cluster.nodes)
            record = await self.one(client, node, rng.choice(self._kinds), rng)
            if record.outcome != OK:
                await sleep(0.05)

    async def one(self, client: int, node, kind: str, rng: random.Random, name: str | None = None) -> Record:
        """Send one operation of C{kind} to C{node} (on C{name}, or a random one) and record it."""
        if name is None:
            name = "" if kind == "list" else rng.choice(self.names.pool(kind))
        record = Record(len(self.records), client, node.name, kind, name, None, self.now())
        self.records.append(record)
        in_flight = self.cluster.writes_in_flight
        in_flight[node.name] += record.write
        try:
            record.value = await self._send(record, node, rng)
            record.outcome = OK
            if record.write:
                self.cluster.last_ack = self.now()
        except (KMSError, ClientError) as e:
            record.outcome, record.status, record.error = classify(e)
            if record.status is not None and record.status < 500 and record.error in MODEL_ERRORS:
                record.value = record.error
        except Exception as e:  # noqa: BLE001 - anything else is an unknown outcome
            record.outcome, record.error = UNKNOWN, f"{type(e).__name__}: {e}"
        finally:
            in_flight[node.name] -= record.write
        record.completed = self.now() if record.outcome != UNKNOWN else None
        return record

    async def _send(self, record: Record, node, rng: random.Random):
        call = self._call(node)
        kind, name = record.kind, record.name
        if kind == "import":
            material = os.urandom(32)
            record.arg = record.op_id
            self.materials.setdefault(name, []).append((record.op_id, material))
            return await call(KEY_IMPORT, pb.ImportKeyRequest(Name=name, Key=material))
        if kind == "create":
            return await call(KEY_CREATE, pb.CreateKeyRequest(Name=name))
        if kind == "rotate":
            return await call(KEY_CREATE, pb.CreateKeyRequest(Name=name, AddVersion=True))
        if kind == "delete":
            return await call(KEY_DELETE, pb.DeleteKeyRequest(Name=name, AllVersions=True))
        if kind == "status":
            return (await call(KEY_STATUS, pb.KeyStatusRequest(Name=name))).Version
        if kind == "generate":
            generated = await call(KEY_GENERATE, pb.GenerateKeyRequest(Name=name))
            await self._check_decrypt(name, generated, rng)
            return generated.Version
        if kind == "encrypt":
            return await self.encrypt(name, node)
        if kind == "list":
            return await self.list_keys(node)
        if kind == "id_create":
            return await call(IDENTITY_CREATE, pb.CreateIdentityRequest(Identity=name, Privilege="User"))
        if kind == "id_delete":
            return await call(IDENTITY_DELETE, pb.DeleteIdentityRequest(Identity=name))
        if kind == "assign":
            record.arg = rng.choice(self.names.assignable)
            return await call(POLICY_ASSIGN, pb.AssignPolicyRequest(Identity=name, Policy=record.arg))
        if kind == "id_status":
            return (await call(IDENTITY_STATUS, pb.IdentityRequest(Identity=name))).Policy
        if kind == "pol_create":
            record.arg = record.op_id
            return await call(POLICY_CREATE, _policy(name, record.op_id))
        if kind == "pol_delete":
            return await call(POLICY_DELETE, pb.DeletePolicyRequest(Name=name))
        if kind == "pol_get":
            return policy_marker(await call(POLICY_GET, pb.PolicyRequest(Name=name)))
        raise AssertionError(f"unknown operation {kind}")

    def _call(self, node):
        async def call(code, message):
            return await self._client.call(code, message, enclave=self.cluster.ENCLAVE, host=node.address)

        return call

    async def encrypt(self, name: str, node) -> tuple[int, int | None]:
        """Encrypt under C{name}; say which version and which imported material did it."""
        reply = await self._call(node)(KEY_ENCRYPT, pb.EncryptRequest(Name=name, Plaintext=b"fault suite"))
        return reply.Version, material_id(self.materials.get(name, []), reply.Version, reply.Ciphertext)

    async def list_keys(self, node) -> frozenset:
        """Every key name one node lists (all pages)."""
        names, cont = set(), ""
        while True:
            page = await self._call(node)(KEY_LIST, pb.ListRequest(ContinueAt=cont, Limit=500))
            names.update(k.Name for k in page.Keys)
            if not page.ContinueAt or not page.Keys:
                return frozenset(names)
            cont = page.ContinueAt

    async def _check_decrypt(self, name: str, generated, rng: random.Random) -> None:
        """Decrypt a generated key on a random node: it must give the same plaintext or an error."""
        other = rng.choice(self.cluster.nodes)
        try:
            reply = await self._call(other)(KEY_DECRYPT, pb.DecryptRequest(Name=name, Ciphertext=generated.Ciphertext))
        except (KMSError, ClientError):
            return
        if reply.Plaintext != generated.Plaintext:
            self.decrypt_mismatches.append(
                f"key {name!r} version {generated.Version}: {other.name} decrypted a generated key "
                "to a different plaintext"
            )


def _policy(name: str, marker: int) -> pb.CreatePolicyRequest:
    request = pb.CreatePolicyRequest(Name=name)
    request.Allow["KEY:STATUS"].Rules[f"m{marker}"].CopyFrom(pb.Rule())
    return request


def policy_marker(reply) -> int:
    """The marker a policy of L{_policy} carries."""
    for pattern in reply.Allow["KEY:STATUS"].Rules:
        return int(pattern[1:])
    raise AssertionError(f"policy {reply.Name} has no marker")
