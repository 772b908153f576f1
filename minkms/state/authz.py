"""
Who may do what (spec sections 1.6, 6 and 8).

The SysAdmin (derived from the HSM key; the caller of a request says
whether it is authenticated as such) may do everything, and is the only
one allowed cluster and enclave commands.  Every other caller must be an
identity registered in the enclave of the request: an Admin may do
everything inside it, a User what its policy allows.  A service account
acts with its parent's privilege and policy.

The same functions authorize a request when it arrives and again when its
write is applied, since the caller may have lost its rights in between.
"""

from collections.abc import Callable

import attrs

from minkms.apikey import is_identity
from minkms.errors import ErrEnclaveNotFound, ErrPermission
from minkms.state import policy as policies
from minkms.state.model import ADMIN, SYSADMIN, USER, Enclave, Identity, Policy, State


@attrs.frozen
class Subject:
    """
    A caller as authorization sees it.

    @ivar privilege: the effective privilege (a service account's is its
        parent's).
    @ivar policy: the effective policy of a User, or C{None}.
    @ivar record: the caller's own identity record; C{None} for the SysAdmin.
    """

    caller: str
    privilege: str
    policy: Policy | None = None
    record: Identity | None = None


def enclave_of(state: State, name: str, sysadmin: bool) -> Enclave:
    """
    The enclave a request names.

    @raise KMSError: L{ErrEnclaveNotFound} to the SysAdmin, L{ErrPermission}
        to anyone else (who may not learn which enclaves exist).
    """
    enclave = state.enclaves.get(name)
    if enclave is None:
        raise ErrEnclaveNotFound if sysadmin else ErrPermission
    return enclave


def subject(state: State, caller: str, sysadmin: bool, enclave: str | None) -> Subject:
    """
    Resolve a caller acting in an enclave (C{None}: a cluster command).

    A caller resolved once is remembered in C{state.subjects} until an
    enclave, identity or policy changes (the state machine forgets them
    all then); a refusal is not remembered, so the cache holds at most one
    entry per known identity and enclave.

    @raise KMSError: L{ErrPermission} for an empty or unknown caller, or
        L{ErrEnclaveNotFound} to the SysAdmin for a missing enclave.
    """
    key = (caller, sysadmin, enclave)
    found = state.subjects.get(key)
    if found is None:
        found = state.subjects[key] = _resolve(state, caller, sysadmin, enclave)
    return found


def _resolve(state: State, caller: str, sysadmin: bool, enclave: str | None) -> Subject:
    if not is_identity(caller):
        raise ErrPermission
    if sysadmin:
        if enclave is not None:
            enclave_of(state, enclave, True)
        return Subject(caller, SYSADMIN)
    if enclave is None:
        raise ErrPermission
    records = enclave_of(state, enclave, False).identities
    record = records.get(caller)
    if record is None:
        raise ErrPermission
    owner = record
    if record.service_account:
        parent = records.get(record.parent)
        if parent is None or parent.service_account:
            raise ErrPermission
        owner = parent
    if owner.privilege == ADMIN:
        return Subject(caller, ADMIN, record=record)
    policy = enclave_of(state, enclave, False).policies.get(owner.policy)
    return Subject(caller, USER, policy, record)


def is_cluster_action(action: str) -> bool:
    """Whether only the SysAdmin may perform an action."""
    return action in policies.CLUSTER_ACTIONS


def authorize(
    state: State,
    caller: str,
    sysadmin: bool,
    enclave: str | None,
    action: str,
    argument: str,
) -> Subject:
    """
    Allow C{caller} to perform C{action} on C{argument} (a key, policy or
    identity name) or raise.

    @raise KMSError: L{ErrPermission}, or L{ErrEnclaveNotFound} for the
        SysAdmin.
    """
    if is_cluster_action(action):
        if not sysadmin or not is_identity(caller):
            raise ErrPermission
        return Subject(caller, SYSADMIN)
    who = subject(state, caller, sysadmin, enclave)
    if who.privilege == USER and not policies.allows(who.policy, action, argument):
        raise ErrPermission
    return who


def authorize_list(
    state: State,
    caller: str,
    sysadmin: bool,
    enclave: str | None,
    action: str,
    prefix: str,
) -> Callable[[str], bool] | None:
    """
    Allow a LIST command with a prefix, or raise L{ErrPermission}.

    @return: C{None} when the caller may see every name, else a predicate
        selecting the names its policy lets it see.
    """
    if is_cluster_action(action):
        authorize(state, caller, sysadmin, enclave, action, prefix)
        return None
    who = subject(state, caller, sysadmin, enclave)
    if who.privilege != USER:
        return None
    if not policies.allows_listing(who.policy, action, prefix):
        raise ErrPermission
    return lambda name: policies.allows(who.policy, action, name)
