"""
The replicated KMS data: enclaves holding key rings, policies and
identities.  Membership is not here: it lives in the Raft
configuration entries (L{minkms.raft.config}).

Records that are replaced as a whole (a key version, a policy, an identity)
are frozen; containers that apply mutates in place (the state, an enclave,
a key ring) are not.  Times are nanoseconds since the Unix epoch, chosen by
the proposer of the write, never read from a local clock.
"""

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


@attrs.frozen
class KeyVersion:
    """
    One version of a key ring: its secret material and provenance, and the
    cipher derived from it, made on first use and gone with the record.
    """

    material: bytes = attrs.field(repr=False)
    key_type: str
    created_at: int
    created_by: str
    imported: bool = False
    _ciphers: dict[int, VersionCipher] = attrs.field(init=False, factory=dict, eq=False, repr=False)

    def cipher(self, version: int) -> VersionCipher:
        """The derived cipher of this record as key version C{version}."""
        found = self._ciphers.get(version)
        if found is None:
            found = self._ciphers[version] = VersionCipher(self.material, self.key_type, version)
        return found


@attrs.frozen
class Key:
    """
    A key ring: the live versions and the highest version ever issued, so
    that a removed version number is never handed out again.  A change
    makes a new ring (L{detached_copy} relies on it); C{versions} is never
    changed in place.
    """

    name: str
    versions: dict[int, KeyVersion] = attrs.Factory(dict)
    highest: int = 0

    def latest(self) -> int:
        """The highest version that still exists."""
        return max(self.versions)


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

    C{retired_keys} remembers, for each deleted key name, the highest
    version it had, so re-creating the name continues the numbering and a
    ciphertext of the old key reports "key does not exist".
    """

    name: str
    created_at: int
    created_by: str
    keys: dict[str, Key] = attrs.Factory(dict)
    retired_keys: dict[str, int] = attrs.Factory(dict)
    policies: dict[str, Policy] = attrs.Factory(dict)
    identities: dict[str, Identity] = attrs.Factory(dict)

    def highest_version(self, name: str) -> int:
        """The highest version ever issued under a key name, live or not."""
        key = self.keys.get(name)
        if key is not None:
            return key.highest
        return self.retired_keys.get(name, 0)


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
                retired_keys=dict(enclave.retired_keys),
                policies=dict(enclave.policies),
                identities=dict(enclave.identities),
            )
            for name, enclave in state.enclaves.items()
        }
    )
