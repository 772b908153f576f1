"""
The meaning of each write command (spec section 6), split in two steps so
that a failing command never changes the state:

  - L{plan} checks the command against the state, in the order authorize
    (403) -> existence (404/409) -> validation (400), and raises a
    L{KMSError} or returns a commit function;
  - the commit function mutates the state and cannot fail.

Planning alone is the dry run a proposer uses to answer early.
"""

from collections.abc import Callable
from typing import Any, Protocol

import attrs

from minkms import crypto
from minkms.errors import (
    ErrEnclaveExists,
    ErrIdentityInOtherEnclave,
    ErrIdentityNotFound,
    ErrKeyExists,
    ErrKeyNotFound,
    ErrPermission,
    ErrPolicyNotFound,
    bad_request,
    internal,
)
from minkms.state import authz, changes as c, snapshot
from minkms.state.arguments import check_identity, check_name, check_tags
from minkms.state.model import (
    ADMIN,
    PRIVILEGES,
    SYSADMIN,
    USER,
    Enclave,
    Identity,
    KeyVersion,
    Policy,
    State,
)
from minkms.state.policy import check_policy_size, normalize_rules

Commit = Callable[[], None]


class _InEnclave(Protocol):
    """A client command that acts inside one enclave."""

    @property
    def enclave(self) -> str: ...

    @property
    def sysadmin(self) -> bool: ...


def plan(state: State, command: c.Command) -> Commit:
    """
    Check a command against the state.

    @return: a function applying it.
    @raise KMSError: why the command fails; the state is untouched.
    """
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise internal(f"unknown state command {type(command).__name__}")
    return handler(state, command)


def _enclave(state: State, command: _InEnclave) -> Enclave:
    return authz.enclave_of(state, command.enclave, command.sysadmin)


def _authorize(state: State, command: c.ClientCommand, action: str, argument: str) -> authz.Subject:
    enclave = getattr(command, "enclave", None)
    return authz.authorize(state, command.caller, command.sysadmin, enclave, action, argument)


def _create_enclave(state: State, command: c.CreateEnclave) -> Commit:
    _authorize(state, command, "ENCLAVE:CREATE", command.name)
    if command.name in state.enclaves:
        raise ErrEnclaveExists
    check_name("enclave", command.name)

    def commit() -> None:
        state.enclaves[command.name] = Enclave(command.name, command.time, command.caller)

    return commit


def _delete_enclave(state: State, command: c.DeleteEnclave) -> Commit:
    _authorize(state, command, "ENCLAVE:DELETE", command.name)
    authz.enclave_of(state, command.name, True)

    def commit() -> None:
        del state.enclaves[command.name]

    return commit


def _next_version(enclave: Enclave, name: str) -> int:
    version = enclave.highest_version(name) + 1
    if version > crypto.MAX_VERSION:
        raise bad_request(f"key '{name}' has no version numbers left")
    return version


def _add_version(enclave: Enclave, name: str, version: int, record: KeyVersion) -> Commit:
    packed = record.pack()

    def commit() -> None:
        ring = enclave.keys.get(name)
        if ring is None:
            enclave.retired_keys.pop(name, None)
            ring = {}
        enclave.keys[name] = {**ring, version: packed}
        enclave.highest[name] = version

    return commit


def _create_key(state: State, command: c.CreateKey) -> Commit:
    _authorize(state, command, "KEY:CREATE", command.name)
    enclave = _enclave(state, command)
    ring = enclave.keys.get(command.name)
    if ring is not None and not command.add_version:
        raise ErrKeyExists
    check_name("key", command.name)
    if command.key_type == "" and ring is not None:
        key_type = KeyVersion.unpack(ring[max(ring)]).key_type
    else:
        key_type = crypto.key_type(command.key_type)
    crypto.check_key_material(command.material, key_type)
    version = _next_version(enclave, command.name)
    record = KeyVersion(command.material, key_type, command.time, command.caller)
    return _add_version(enclave, command.name, version, record)


def _import_key(state: State, command: c.ImportKey) -> Commit:
    _authorize(state, command, "KEY:CREATE", command.name)
    enclave = _enclave(state, command)
    if command.name in enclave.keys:
        raise ErrKeyExists
    check_name("key", command.name)
    key_type = crypto.key_type(command.key_type)
    crypto.check_key_material(command.material, key_type)
    version = _next_version(enclave, command.name)
    record = KeyVersion(command.material, key_type, command.time, command.caller, imported=True)
    return _add_version(enclave, command.name, version, record)


def _delete_key(state: State, command: c.DeleteKey) -> Commit:
    _authorize(state, command, "KEY:DELETE", command.name)
    enclave = _enclave(state, command)
    name = command.name
    ring = enclave.keys.get(name)
    if ring is None:
        raise ErrKeyNotFound
    if command.all_versions and command.version != 0:
        raise bad_request("invalid arguments: cannot delete all versions and a specific version at once")
    if command.all_versions:
        doomed = set(ring)
    else:
        version = command.version or max(ring)
        if version not in ring:
            raise ErrKeyNotFound
        doomed = {version}

    def commit() -> None:
        for version in doomed:
            enclave.ciphers.pop((name, version), None)
        versions = {n: v for n, v in ring.items() if n not in doomed}
        if versions:
            enclave.keys[name] = versions
        else:
            del enclave.keys[name]
            enclave.retired_keys[name] = enclave.highest.pop(name)

    return commit


def _create_policy(state: State, command: c.CreatePolicy) -> Commit:
    _authorize(state, command, "POLICY:CREATE", command.name)
    enclave = _enclave(state, command)
    check_name("policy", command.name)
    allow = normalize_rules(command.allow, "allow")
    deny = normalize_rules(command.deny, "deny")
    check_policy_size(allow, deny)
    record = Policy(command.name, allow, deny, command.time, command.caller)

    def commit() -> None:
        enclave.policies[command.name] = record

    return commit


def _delete_policy(state: State, command: c.DeletePolicy) -> Commit:
    _authorize(state, command, "POLICY:DELETE", command.name)
    enclave = _enclave(state, command)
    if command.name not in enclave.policies:
        raise ErrPolicyNotFound

    def commit() -> None:
        del enclave.policies[command.name]
        for identity, record in list(enclave.identities.items()):
            if record.policy == command.name:
                enclave.identities[identity] = attrs.evolve(record, policy="")

    return commit


def _assign_policy(state: State, command: c.AssignPolicy) -> Commit:
    _authorize(state, command, "POLICY:ASSIGN", command.policy)
    enclave = _enclave(state, command)
    if command.policy not in enclave.policies:
        raise ErrPolicyNotFound
    record = enclave.identities.get(command.identity)
    if record is None:
        raise ErrIdentityNotFound
    if record.service_account:
        raise bad_request("cannot assign a policy to a service account: it acts with its parent's policy")
    if record.privilege != USER:
        raise bad_request(
            f"cannot assign a policy to an identity with privilege {record.privilege}: "
            "only User identities have policies"
        )

    def commit() -> None:
        enclave.identities[command.identity] = attrs.evolve(record, policy=command.policy)

    return commit


def _privilege(text: str) -> str:
    if text == "":
        return USER
    for known in PRIVILEGES:
        if text.lower() == known.lower():
            return known
    raise bad_request(f"invalid privilege '{text}': must be {SYSADMIN}, {ADMIN} or {USER}")


def _create_identity(state: State, command: c.CreateIdentity) -> Commit:
    """
    IDENTITY:CREATE.  A service account may not create identities, so no
    identity outlives the credential that made it; an identity lives in
    one enclave only (spec section 1.6).
    """
    who = _authorize(state, command, "IDENTITY:CREATE", command.identity)
    if who.record is not None and who.record.service_account:
        raise ErrPermission
    enclave = _enclave(state, command)
    existing = enclave.identities.get(command.identity)
    if who.privilege == USER:
        own_account = existing is not None and existing.service_account and existing.parent == command.caller
        if not command.service_account or (existing is not None and not own_account):
            raise ErrPermission
    if any(command.identity in other.identities for name, other in state.enclaves.items() if name != command.enclave):
        raise ErrIdentityInOtherEnclave
    check_identity(command.identity)
    privilege = _privilege(command.privilege)
    if privilege == SYSADMIN:
        raise bad_request("invalid privilege: SysAdmin cannot be given to an identity in an enclave")
    check_tags(command.tags)
    policy = ""
    parent = ""
    if command.service_account:
        if who.privilege == SYSADMIN:
            raise bad_request("the SysAdmin cannot own service accounts: create them as an enclave identity")
        if command.identity == command.caller:
            raise bad_request("an identity cannot be its own service account")
        if command.privilege != "" and privilege != who.privilege:
            raise bad_request(
                f"invalid privilege {privilege}: a service account has the privilege of its parent ({who.privilege})"
            )
        if any(r.parent == command.identity for r in enclave.identities.values()):
            raise bad_request(f"identity '{command.identity}' owns service accounts and cannot become one")
        privilege = who.privilege
        parent = command.caller
    elif existing is not None and privilege == USER and not existing.service_account:
        policy = existing.policy
    record = Identity(
        identity=command.identity,
        privilege=privilege,
        created_at=command.time,
        created_by=command.caller,
        policy=policy,
        service_account=command.service_account,
        parent=parent,
        tags=dict(sorted(command.tags.items())),
    )

    def commit() -> None:
        enclave.identities[command.identity] = record

    return commit


def _delete_identity(state: State, command: c.DeleteIdentity) -> Commit:
    _authorize(state, command, "IDENTITY:DELETE", command.identity)
    enclave = _enclave(state, command)
    if command.identity not in enclave.identities:
        raise ErrIdentityNotFound
    doomed = [command.identity] + [
        identity
        for identity, record in enclave.identities.items()
        if record.service_account and record.parent == command.identity
    ]

    def commit() -> None:
        for identity in doomed:
            del enclave.identities[identity]

    return commit


def _restore_state(state: State, command: c.RestoreState) -> Commit:
    if not command.sysadmin:
        raise ErrPermission
    try:
        restored = snapshot.load(command.state)
    except snapshot.SnapshotError:
        raise bad_request("invalid backup: not a state snapshot") from None

    def commit() -> None:
        state.enclaves = restored.enclaves

    return commit


_HANDLERS: dict[type[c.Command], Callable[[State, Any], Commit]] = {
    c.RestoreState: _restore_state,
    c.CreateEnclave: _create_enclave,
    c.DeleteEnclave: _delete_enclave,
    c.CreateKey: _create_key,
    c.ImportKey: _import_key,
    c.DeleteKey: _delete_key,
    c.CreatePolicy: _create_policy,
    c.DeletePolicy: _delete_policy,
    c.AssignPolicy: _assign_policy,
    c.CreateIdentity: _create_identity,
    c.DeleteIdentity: _delete_identity,
}
