"""
The write responders: one function per write row of the command table
(L{minkms.wire.commands}) that the state machine carries out, turning the
request into the state change (L{minkms.state.changes}) to propose.

A responder takes C{(ctx, request)} and returns a L{Proposal}: the change,
stamped with the caller and the time, with any key material generated
here (apply must not draw randomness), and the new name, if the command
makes one, that the strict name rules (L{minkms.names}) must accept.
L{minkms.kms.dispatch.prepare_write} checks the scope first and dry-runs
the change after.
"""

import attrs

from minkms import crypto
from minkms.state import changes as sc
from minkms.state.policy import raw_rules_from_proto
from minkms.wire.commands import (
    ENCLAVE_CREATE,
    ENCLAVE_DELETE,
    IDENTITY_CREATE,
    IDENTITY_DELETE,
    KEY_CREATE,
    KEY_DELETE,
    KEY_IMPORT,
    POLICY_ASSIGN,
    POLICY_CREATE,
    POLICY_DELETE,
    Responders,
)

proposals = Responders()


@attrs.frozen
class Proposal:
    """
    A write ready for its dry run.

    @ivar change: the state change to propose.
    @ivar new_name: C{(kind, name)} of the name the write creates, for the
        strict name rules; None if it creates none.
    """

    change: sc.ClientCommand
    new_name: tuple[str, str] | None = None


def _common(ctx) -> dict:
    return {"caller": ctx.caller, "sysadmin": ctx.is_sysadmin, "time": ctx.now_ns}


def _in_enclave(ctx) -> dict:
    return {"enclave": ctx.enclave, **_common(ctx)}


@proposals.responder(ENCLAVE_CREATE)
def create_enclave(ctx, request) -> Proposal:
    """ENCLAVE:CREATE."""
    return Proposal(sc.CreateEnclave(name=request.Name, **_common(ctx)), ("enclave", request.Name))


@proposals.responder(ENCLAVE_DELETE)
def delete_enclave(ctx, request) -> Proposal:
    """ENCLAVE:DELETE."""
    return Proposal(sc.DeleteEnclave(name=request.Name, **_common(ctx)))


@proposals.responder(KEY_CREATE)
def create_key(ctx, request) -> Proposal:
    """KEY:CREATE: the key material is generated here, before proposing."""
    change = sc.CreateKey(
        name=request.Name,
        key_type=request.Type,
        add_version=request.AddVersion,
        material=crypto.new_key_material(),
        **_in_enclave(ctx),
    )
    return Proposal(change, ("key", request.Name))


@proposals.responder(KEY_DELETE)
def delete_key(ctx, request) -> Proposal:
    """KEY:DELETE."""
    change = sc.DeleteKey(
        name=request.Name, version=request.Version, all_versions=request.AllVersions, **_in_enclave(ctx)
    )
    return Proposal(change)


@proposals.responder(KEY_IMPORT)
def import_key(ctx, request) -> Proposal:
    """KEY:IMPORT: the client's key material."""
    change = sc.ImportKey(name=request.Name, key_type=request.Type, material=request.Key, **_in_enclave(ctx))
    return Proposal(change, ("key", request.Name))


@proposals.responder(POLICY_CREATE)
def create_policy(ctx, request) -> Proposal:
    """POLICY:CREATE: rules as sent; apply validates them."""
    change = sc.CreatePolicy(
        name=request.Name,
        allow=raw_rules_from_proto(request.Allow),
        deny=raw_rules_from_proto(request.Deny),
        **_in_enclave(ctx),
    )
    return Proposal(change, ("policy", request.Name))


@proposals.responder(POLICY_DELETE)
def delete_policy(ctx, request) -> Proposal:
    """POLICY:DELETE."""
    return Proposal(sc.DeletePolicy(name=request.Name, **_in_enclave(ctx)))


@proposals.responder(POLICY_ASSIGN)
def assign_policy(ctx, request) -> Proposal:
    """POLICY:ASSIGN."""
    return Proposal(sc.AssignPolicy(identity=request.Identity, policy=request.Policy, **_in_enclave(ctx)))


@proposals.responder(IDENTITY_CREATE)
def create_identity(ctx, request) -> Proposal:
    """IDENTITY:CREATE."""
    change = sc.CreateIdentity(
        identity=request.Identity,
        privilege=request.Privilege,
        service_account=request.IsServiceAccount,
        tags=dict(sorted(request.Tags.items())),
        **_in_enclave(ctx),
    )
    return Proposal(change)


@proposals.responder(IDENTITY_DELETE)
def delete_identity(ctx, request) -> Proposal:
    """IDENTITY:DELETE."""
    return Proposal(sc.DeleteIdentity(identity=request.Identity, **_in_enclave(ctx)))
