"""
The read commands: pure functions over a L{State} (any node answers them
from its applied state, DESIGN decision 6).

Authorization is the caller's job (L{minkms.state.authz}); these functions
check existence (404) and then arguments (400).  Encrypt, generate and MAC
are reads too: their randomness (nonces, data keys) is never replicated.
"""

import bisect
from collections.abc import Callable
from typing import Any

import attrs

from minkms import crypto
from minkms.errors import (
    ErrDecrypt,
    ErrEnclaveNotFound,
    ErrIdentityNotFound,
    ErrKeyNotFound,
    ErrPolicyNotFound,
    bad_request,
)
from minkms.state.model import Enclave, Identity, KeyVersion, Policy, State

DEFAULT_LIST_LIMIT = 1000
"""Items per page when a ListRequest asks for 0, and the most ever sent."""


@attrs.frozen
class Page:
    """One page of a listing; C{continue_at} is the next page's first name."""

    items: list[Any]
    continue_at: str = ""


@attrs.frozen
class KeyStatus:
    """One key version as KEY:STATUS and KEY:LIST describe it."""

    name: str
    version: int
    record: KeyVersion


@attrs.frozen
class IdentityStatus:
    """An identity with what IDENTITY:STATUS reports beyond its record."""

    record: Identity
    privilege: str
    service_accounts: tuple[str, ...] = ()


def paginate(
    names: list[str],
    prefix: str,
    continue_at: str,
    limit: int,
    visible: Callable[[str], bool] | None = None,
) -> tuple[list[str], str]:
    """
    One page of sorted C{names} (spec section 5.1).

    Starts at C{continue_at} inclusive, or the first name after it; a
    C{continue_at} outside C{prefix} gives an empty page.  C{limit} 0 (or
    more than the maximum) means L{DEFAULT_LIST_LIMIT}.  Names hidden by
    C{visible} neither count nor become the continuation.

    @return: the names and the first name of the next page ("" when done).
    """
    if continue_at and not continue_at.startswith(prefix):
        return [], ""
    if limit == 0 or limit > DEFAULT_LIST_LIMIT:
        limit = DEFAULT_LIST_LIMIT
    page: list[str] = []
    for name in names[bisect.bisect_left(names, max(prefix, continue_at)) :]:
        if not name.startswith(prefix):
            break
        if visible is not None and not visible(name):
            continue
        if len(page) == limit:
            return page, name
        page.append(name)
    return page, ""


def enclave(state: State, name: str) -> Enclave:
    """ENCLAVE:STATUS; also how every other read finds its enclave."""
    found = state.enclaves.get(name)
    if found is None:
        raise ErrEnclaveNotFound
    return found


def list_enclaves(state: State, prefix: str, continue_at: str, limit: int) -> Page:
    """ENCLAVE:LIST."""
    names, after = paginate(sorted(state.enclaves), prefix, continue_at, limit)
    return Page([state.enclaves[n] for n in names], after)


def key_status(state: State, enclave_name: str, name: str, version: int = 0) -> KeyStatus:
    """KEY:STATUS: one version of a key, 0 meaning the latest."""
    container = enclave(state, enclave_name)
    version = _live_version(container, name, version)
    return KeyStatus(name, version, KeyVersion.unpack(container.keys[name][version]))


def _live_version(container: Enclave, name: str, version: int) -> int:
    """C{version} of the key, 0 meaning the latest, if it exists; else L{ErrKeyNotFound}."""
    ring = container.keys.get(name)
    if ring is None:
        raise ErrKeyNotFound
    version = version or max(ring)
    if version not in ring:
        raise ErrKeyNotFound
    return version


def _cipher(state: State, enclave_name: str, name: str, version: int) -> tuple[int, crypto.VersionCipher]:
    """A live version of a key (0: the latest) and its cipher."""
    container = enclave(state, enclave_name)
    version = _live_version(container, name, version)
    return version, container.cipher(name, version)


def list_keys(
    state: State,
    enclave_name: str,
    prefix: str,
    continue_at: str,
    limit: int,
    visible: Callable[[str], bool] | None = None,
) -> Page:
    """KEY:LIST: one item per key, describing its latest version."""
    keys = enclave(state, enclave_name).keys
    names, after = paginate(sorted(keys), prefix, continue_at, limit, visible)
    return Page([key_status(state, enclave_name, n) for n in names], after)


def list_key_versions(state: State, enclave_name: str, name: str, continue_at: str, limit: int) -> Page:
    """
    KEY:LISTVERSIONS (209, provisional): every live version of one key,
    ascending; the continuation is the next version as a decimal string.
    """
    ring = enclave(state, enclave_name).keys.get(name)
    if ring is None:
        raise ErrKeyNotFound
    start = 0
    if continue_at:
        if not (continue_at.isascii() and continue_at.isdigit()):
            raise bad_request(f"invalid ContinueAt '{continue_at}': expected a key version")
        start = int(continue_at)
    if limit == 0 or limit > DEFAULT_LIST_LIMIT:
        limit = DEFAULT_LIST_LIMIT
    versions = sorted(v for v in ring if v >= start)
    page = [KeyStatus(name, v, KeyVersion.unpack(ring[v])) for v in versions[:limit]]
    after = str(versions[limit]) if len(versions) > limit else ""
    return Page(page, after)


def encrypt(
    state: State, enclave_name: str, name: str, version: int, plaintext: bytes, aad: bytes
) -> tuple[int, bytes]:
    """KEY:ENCRYPT: the version used and the ciphertext."""
    version, cipher = _cipher(state, enclave_name, name, version)
    return version, cipher.encrypt(plaintext, aad)


def generate_key(
    state: State, enclave_name: str, name: str, version: int, aad: bytes, length: int
) -> tuple[int, bytes, bytes]:
    """KEY:GENERATE: the version used, a fresh data key and its ciphertext."""
    version, cipher = _cipher(state, enclave_name, name, version)
    plaintext = crypto.generate_data_key(length)
    return version, plaintext, cipher.encrypt(plaintext, aad)


def decrypt(state: State, enclave_name: str, name: str, version: int, ciphertext: bytes, aad: bytes) -> bytes:
    """
    KEY:DECRYPT.  Version 0 (what MinIO sends) means "the version in the
    ciphertext".  A removed version gives L{ErrKeyNotFound}; a version that
    was never issued, or that differs from a non-zero requested version,
    means the ciphertext is not genuine: L{ErrDecrypt}.
    """
    container = enclave(state, enclave_name)
    ring = container.keys.get(name)
    if ring is None:
        raise ErrKeyNotFound
    embedded = crypto.parse_ciphertext_version(ciphertext)
    if version not in (0, embedded) or embedded > container.highest[name]:
        raise ErrDecrypt
    if embedded not in ring:
        raise ErrKeyNotFound
    return container.cipher(name, embedded).decrypt(ciphertext, aad)


def mac(state: State, enclave_name: str, name: str, version: int, message: bytes) -> tuple[int, bytes]:
    """KEY:MAC: the version used and HMAC-SHA-256 of the message."""
    version, cipher = _cipher(state, enclave_name, name, version)
    return version, cipher.mac(message)


def policy(state: State, enclave_name: str, name: str) -> Policy:
    """POLICY:GET and POLICY:STATUS."""
    found = enclave(state, enclave_name).policies.get(name)
    if found is None:
        raise ErrPolicyNotFound
    return found


def list_policies(
    state: State,
    enclave_name: str,
    prefix: str,
    continue_at: str,
    limit: int,
    visible: Callable[[str], bool] | None = None,
) -> Page:
    """POLICY:LIST."""
    policies = enclave(state, enclave_name).policies
    names, after = paginate(sorted(policies), prefix, continue_at, limit, visible)
    return Page([policies[n] for n in names], after)


def _status(container: Enclave, record: Identity, children: dict[str, list[str]]) -> IdentityStatus:
    privilege = record.privilege
    if record.service_account:
        parent = container.identities.get(record.parent)
        if parent is not None:
            privilege = parent.privilege
    return IdentityStatus(record, privilege, tuple(sorted(children.get(record.identity, ()))))


def _children(container: Enclave) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for record in container.identities.values():
        if record.service_account:
            children.setdefault(record.parent, []).append(record.identity)
    return children


def identity(state: State, enclave_name: str, name: str) -> IdentityStatus:
    """
    IDENTITY:STATUS: the record, the effective privilege (a service
    account's is its parent's) and the identity's service accounts.
    """
    container = enclave(state, enclave_name)
    record = container.identities.get(name)
    if record is None:
        raise ErrIdentityNotFound
    return _status(container, record, _children(container))


def list_identities(
    state: State,
    enclave_name: str,
    prefix: str,
    continue_at: str,
    limit: int,
    visible: Callable[[str], bool] | None = None,
) -> Page:
    """IDENTITY:LIST."""
    container = enclave(state, enclave_name)
    names, after = paginate(sorted(container.identities), prefix, continue_at, limit, visible)
    children = _children(container)
    return Page([_status(container, container.identities[n], children) for n in names], after)
