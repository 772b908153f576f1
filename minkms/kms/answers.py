"""
The read responders: one function per read row of the command table
(L{minkms.wire.commands}), answering a frame from the applied state.

L{minkms.kms.dispatch.execute_read} has checked the scope and authorized
the caller by the row's rule before a responder runs; a responder looks
the answer up (L{minkms.state.reads}) and builds the protobuf response.
Every responder takes C{(state, ctx, request, visible)}: C{visible} is the
listing filter of a L{minkms.wire.commands.BY_LISTING} row (None: all).
"""

from minkms.state import reads
from minkms.state.model import PRIVILEGE_NUMBERS, SYSADMIN
from minkms.state.policy import rules_to_proto
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import (
    ENCLAVE_LIST,
    ENCLAVE_STATUS,
    IDENTITY_LIST,
    IDENTITY_STATUS,
    KEY_DECRYPT,
    KEY_ENCRYPT,
    KEY_GENERATE,
    KEY_LIST,
    KEY_LISTVERSIONS,
    KEY_MAC,
    KEY_STATUS,
    POLICY_GET,
    POLICY_LIST,
    POLICY_STATUS,
    Responders,
)

answers = Responders()


def _stamp(field, ns: int) -> None:
    field.FromNanoseconds(ns)


def enclave_response(enclave) -> pb.EnclaveStatusResponse:
    """The C{EnclaveStatusResponse} of an enclave record."""
    out = pb.EnclaveStatusResponse(Name=enclave.name, CreatedBy=enclave.created_by)
    _stamp(out.CreatedAt, enclave.created_at)
    return out


def key_response(status: reads.KeyStatus) -> pb.KeyStatusResponse:
    """The C{KeyStatusResponse} of one key version."""
    out = pb.KeyStatusResponse(
        Name=status.name,
        Version=status.version,
        Type=status.record.key_type,
        CreatedBy=status.record.created_by,
    )
    _stamp(out.CreatedAt, status.record.created_at)
    return out


def policy_status_response(policy) -> pb.PolicyStatusResponse:
    """The C{PolicyStatusResponse} of a policy record."""
    out = pb.PolicyStatusResponse(Name=policy.name, CreatedBy=policy.created_by)
    _stamp(out.CreatedAt, policy.created_at)
    return out


def identity_response(status: reads.IdentityStatus) -> pb.IdentityResponse:
    """The C{IdentityResponse} of an identity and its service accounts."""
    record = status.record
    out = pb.IdentityResponse(
        Identity=record.identity,
        Privilege=PRIVILEGE_NUMBERS[status.privilege],
        Policy=record.policy,
        CreatedBy=record.created_by,
        IsServiceAccount=record.service_account,
        ServiceAccounts=status.service_accounts,
        Tags=record.tags,
    )
    _stamp(out.CreatedAt, record.created_at)
    return out


@answers.responder(ENCLAVE_STATUS)
def enclave_status(state, ctx, request, visible):
    """ENCLAVE:STATUS."""
    return enclave_response(reads.enclave(state, request.Name))


@answers.responder(ENCLAVE_LIST)
def list_enclaves(state, ctx, request, visible):
    """ENCLAVE:LIST (the SysAdmin sees every enclave)."""
    page = reads.list_enclaves(state, request.Prefix, request.ContinueAt, request.Limit)
    return pb.ListEnclavesResponse(Enclaves=[enclave_response(e) for e in page.items], ContinueAt=page.continue_at)


@answers.responder(KEY_STATUS)
def key_status(state, ctx, request, visible):
    """KEY:STATUS."""
    return key_response(reads.key_status(state, ctx.enclave, request.Name, request.Version))


@answers.responder(KEY_ENCRYPT)
def encrypt(state, ctx, request, visible):
    """KEY:ENCRYPT."""
    version, ciphertext = reads.encrypt(
        state,
        ctx.enclave,
        request.Name,
        request.Version,
        request.Plaintext,
        request.AssociatedData,
    )
    return pb.EncryptResponse(Version=version, Ciphertext=ciphertext)


@answers.responder(KEY_DECRYPT)
def decrypt(state, ctx, request, visible):
    """KEY:DECRYPT."""
    plaintext = reads.decrypt(
        state,
        ctx.enclave,
        request.Name,
        request.Version,
        request.Ciphertext,
        request.AssociatedData,
    )
    return pb.DecryptResponse(Plaintext=plaintext)


@answers.responder(KEY_GENERATE)
def generate(state, ctx, request, visible):
    """KEY:GENERATE: a data key, in plaintext and sealed."""
    version, plaintext, ciphertext = reads.generate_key(
        state,
        ctx.enclave,
        request.Name,
        request.Version,
        request.AssociatedData,
        request.Length,
    )
    return pb.GenerateKeyResponse(Version=version, Plaintext=plaintext, Ciphertext=ciphertext)


@answers.responder(KEY_LIST)
def list_keys(state, ctx, request, visible):
    """KEY:LIST: the keys the caller may see."""
    page = reads.list_keys(state, ctx.enclave, request.Prefix, request.ContinueAt, request.Limit, visible)
    return pb.ListKeysResponse(Keys=[key_response(s) for s in page.items], ContinueAt=page.continue_at)


@answers.responder(KEY_LISTVERSIONS)
def list_key_versions(state, ctx, request, visible):
    """KEY:LISTVERSIONS: every version of the key named by the prefix."""
    page = reads.list_key_versions(state, ctx.enclave, request.Prefix, request.ContinueAt, request.Limit)
    return pb.ListKeysResponse(Keys=[key_response(s) for s in page.items], ContinueAt=page.continue_at)


@answers.responder(KEY_MAC)
def mac(state, ctx, request, visible):
    """KEY:MAC."""
    version, tag = reads.mac(state, ctx.enclave, request.Name, request.Version, request.Message)
    return pb.MACResponse(Version=version, MAC=tag)


@answers.responder(POLICY_GET)
def get_policy(state, ctx, request, visible):
    """POLICY:GET: the policy with its rules."""
    policy = reads.policy(state, ctx.enclave, request.Name)
    out = pb.PolicyResponse(Name=policy.name, CreatedBy=policy.created_by)
    rules_to_proto(policy.allow, out.Allow)
    rules_to_proto(policy.deny, out.Deny)
    _stamp(out.CreatedAt, policy.created_at)
    return out


@answers.responder(POLICY_STATUS)
def policy_status(state, ctx, request, visible):
    """POLICY:STATUS."""
    return policy_status_response(reads.policy(state, ctx.enclave, request.Name))


@answers.responder(POLICY_LIST)
def list_policies(state, ctx, request, visible):
    """POLICY:LIST: the policies the caller may see."""
    page = reads.list_policies(state, ctx.enclave, request.Prefix, request.ContinueAt, request.Limit, visible)
    return pb.ListPoliciesResponse(
        Policies=[policy_status_response(p) for p in page.items], ContinueAt=page.continue_at
    )


@answers.responder(IDENTITY_STATUS)
def identity_status(state, ctx, request, visible):
    """
    IDENTITY:STATUS.  An empty identity means the caller itself; for the
    SysAdmin, who lives in no enclave, the answer is made up on the spot.
    """
    if request.Identity == "" and ctx.is_sysadmin:
        return pb.IdentityResponse(Identity=ctx.caller, Privilege=PRIVILEGE_NUMBERS[SYSADMIN], CreatedBy=ctx.caller)
    return identity_response(reads.identity(state, ctx.enclave, request.Identity or ctx.caller))


@answers.responder(IDENTITY_LIST)
def list_identities(state, ctx, request, visible):
    """IDENTITY:LIST: the identities the caller may see."""
    page = reads.list_identities(state, ctx.enclave, request.Prefix, request.ContinueAt, request.Limit, visible)
    return pb.ListIdentitiesResponse(Identities=[identity_response(s) for s in page.items], ContinueAt=page.continue_at)
