"""
The replicated KMS data: enclaves holding key rings, policies and
identities.  Membership is not here: it lives in the Raft
configuration entries (L{minkms.raft.config}).

Records that are replaced as a whole (a key ring, a policy, an identity)
are frozen or never changed in place; containers that apply mutates in
place (the state, an enclave) are not.  Times are nanoseconds since the
Unix epoch, chosen by the proposer of the write, never read from a local
clock.
"""

import struct
from typing import Any

import attrs

from minkms.crypto import VersionCipher
from minkms.state.patterns import PolicyMatcher

SYSADMIN = "SysAdmin"
ADMIN = "Admin"
USER = "User"
PRIVILEGES = (SYSADMIN, ADMIN, USER)
PRIVILEGE_NUMBERS = {SYSADMIN: 1, ADMIN: 2, USER: 3}

Rules = dict[str, tuple[str, ...]]
"""Policy rules: canonical action name -> patterns, sorted."""


_VERSION_HEAD = struct.Struct("<HBH?")
"""A packed key version's lengths of material, key type and creation time, and whether it was imported."""


@attrs.frozen
class KeyVersion:
    """
    One version of a key ring: its secret material and provenance.

    An enclave stores each version packed in one C{bytes} (L{pack}), and
    readers get this record back (L{unpack}) when they need one: plain bytes
    in plain dicts are invisible to Python's cycle collector, so a node's
    collections cost the same at a million keys as at a hundred.  With a
    record object per version, a full collection walked every key: 0.8 to 2
    seconds at 300,000 keys, on the leader and its followers alike.
    """

    material: bytes = attrs.field(repr=False)
    key_type: str
    created_at: int
    created_by: str
    imported: bool = False

    def pack(self) -> bytes:
        """The bytes an enclave keeps for this version."""
        key_type = self.key_type.encode("utf-8")
        created_at = self.created_at.to_bytes((self.created_at.bit_length() + 8) // 8, "little", signed=True)
        head = _VERSION_HEAD.pack(len(self.material), len(key_type), len(created_at), self.imported)
        return b"".join((head, self.material, key_type, created_at, self.created_by.encode("utf-8")))

    @classmethod
    def unpack(cls, data: bytes) -> "KeyVersion":
        """The version L{pack} gave C{data} for."""
        return cls(*unpack_version(data))


def unpack_version(data: bytes) -> tuple[bytes, str, int, str, bool]:
    """
    The fields of a packed L{KeyVersion} in their order, without making the
    record: what a snapshot dump, which writes every version, needs.
    """
    material_size, type_size, time_size, imported = _VERSION_HEAD.unpack_from(data)
    at = _VERSION_HEAD.size
    material = data[at : at + material_size]
    at += material_size
    key_type = data[at : at + type_size].decode("utf-8")
    at += type_size
    created_at = int.from_bytes(data[at : at + time_size], "little", signed=True)
    return material, key_type, created_at, data[at + time_size :].decode("utf-8"), imported


KeyRing = dict[int, bytes]
"""A key's live versions: version number -> the packed L{KeyVersion}.  Replaced on change, never changed in place."""


@attrs.frozen
class Policy:
    """
    A named set of allow and deny rules, assigned to User identities.

    C{matcher} is the rules compiled when the record is made: each version
    of a policy is compiled once, and the compiled form goes with it.
    """

    name: str
    allow: Rules
    deny: Rules
    created_at: int
    created_by: str
    matcher: PolicyMatcher = attrs.field(init=False, eq=False, repr=False)

    @matcher.default
    def _compile(self) -> PolicyMatcher:
        return PolicyMatcher(self.allow, self.deny)


@attrs.frozen
class Identity:
    """
    An identity registered in one enclave.

    A service account has C{parent} set to the identity that created it and
    acts with its parent's privilege and policy.
    """

    identity: str
    privilege: str
    created_at: int
    created_by: str
    policy: str = ""
    service_account: bool = False
    parent: str = ""
    tags: dict[str, str] = attrs.Factory(dict)


@attrs.define
class Enclave:
    """
    A tenant namespace; nothing is shared across enclaves.

    C{highest} holds, for each live key, the highest version ever issued
    under its name; C{retired_keys} the same for each deleted key name, so
    re-creating the name continues the numbering and a ciphertext of the
    old key reports "key does not exist".

    C{ciphers} is not replicated: the derived cipher of each key version
    used here, made on first use and dropped with the version, so that no
    derived key outlives a deleted one.
    """

    name: str
    created_at: int
    created_by: str
    keys: dict[str, KeyRing] = attrs.Factory(dict)
    highest: dict[str, int] = attrs.Factory(dict)
    retired_keys: dict[str, int] = attrs.Factory(dict)
    policies: dict[str, Policy] = attrs.Factory(dict)
    identities: dict[str, Identity] = attrs.Factory(dict)
    ciphers: dict[tuple[str, int], VersionCipher] = attrs.field(init=False, factory=dict, eq=False, repr=False)

    def highest_version(self, name: str) -> int:
        """The highest version ever issued under a key name, live or not."""
        found = self.highest.get(name)
        if found is not None:
            return found
        return self.retired_keys.get(name, 0)

    def cipher(self, name: str, version: int) -> VersionCipher:
        """The derived cipher of a live key version (the caller checked that it exists)."""
        found = self.ciphers.get((name, version))
        if found is None:
            record = KeyVersion.unpack(self.keys[name][version])
            found = self.ciphers[(name, version)] = VersionCipher(record.material, record.key_type, version)
        return found


@attrs.define
class State:
    """
    Everything the state machine replicates.

    C{subjects} is not replicated: it remembers the callers that
    L{minkms.state.authz.subject} resolved, so that a request does not
    resolve its caller again; the state machine empties it whenever an
    enclave, an identity or a policy changes.
    """

    enclaves: dict[str, Enclave] = attrs.Factory(dict)
    # (caller, sysadmin, enclave) -> authz.Subject, which imports this module.
    subjects: dict[tuple[str, bool, str | None], Any] = attrs.field(init=False, factory=dict, eq=False, repr=False)


def detached_copy(state: State) -> State:
    """
    A copy of C{state} that later applies leave alone, to be serialized
    while the original moves on.  Applying only assigns into an enclave's
    dicts and replaces records (key rings included), so copying those dicts
    is enough: a few milliseconds for 100,000 keys.
    """
    return State(
        {
            name: attrs.evolve(
                enclave,
                keys=dict(enclave.keys),
                highest=dict(enclave.highest),
                retired_keys=dict(enclave.retired_keys),
                policies=dict(enclave.policies),
                identities=dict(enclave.identities),
            )
            for name, enclave in state.enclaves.items()
        }
    )
