"""
The glue between the C{/v1/kms} command protocol and the state machine:
one function per role, all pure (no Twisted, no I/O).

  - L{execute_read} answers a read command from the local applied state;
  - L{prepare_write} turns a write request into a state-machine command
    (authorized, dry-run against the local state, key material generated,
    time stamped) that the server proposes as C{command.encode()};
  - L{result_error} reads the outcome of applying it.

Order of checks everywhere: authenticate -> authorize (403) -> existence
(404/409) -> validation (400).  A caller that is not the SysAdmin never
learns whether an enclave exists.

Prepare on the leader where possible: the dry run on a lagging follower
may report a key missing that the leader already has.  Whatever the dry
run says, apply checks again.
"""

import attrs

from minkms import crypto
from minkms.errors import ErrPermission, bad_request, internal, not_implemented
from minkms.state import authz, reads
from minkms.state import changes as sc
from minkms.state.machine import StateMachine, check, result_error
from minkms.state.model import PRIVILEGE_NUMBERS, SYSADMIN, State
from minkms.state.policy import raw_rules_from_proto, rules_to_proto
from minkms.wire import kms_pb2 as pb
from minkms.names import validate_name
from minkms.wire.commands import SCOPE_CLUSTER, Command

__all__ = ["CallContext", "execute_read", "prepare_write", "result_error"]

CLUSTER_NODE_WRITES = frozenset({1, 2, 4, 5, 6})
CLUSTER_STATUS = 3


@attrs.frozen
class CallContext:
    """
    Who is calling, where, and when.

    @ivar caller: the C{h1:} identity of the client certificate ("" if none).
    @ivar enclave: the enclave named in the URL path ("" if none).
    @ivar sysadmin: the SysAdmin identity derived from the HSM key.
    @ivar now_ns: the time to stamp on writes (ns since the epoch).
    """

    caller: str
    enclave: str
    sysadmin: str
    now_ns: int

    @property
    def is_sysadmin(self) -> bool:
        """Whether the caller is authenticated as the SysAdmin."""
        return self.caller != "" and self.caller == self.sysadmin


def _state(state) -> State:
    return state.state if isinstance(state, StateMachine) else state


def _check_scope(state: State, ctx: CallContext, command: Command, resolve_caller: bool = True) -> None:
    """
    The checks every command of a request passes first: cluster commands
    are the SysAdmin's and name no enclave; enclave commands name one that
    exists and in which the caller is known.  Reads leave the last part
    (C{resolve_caller=False}) to their handler, which authorizes before
    anything else, so the caller is resolved once per frame.
    """
    root = ctx.is_sysadmin
    if command.scope == SCOPE_CLUSTER:
        if not root:
            raise ErrPermission
        if ctx.enclave:
            raise bad_request(
                f"{command.name} is a cluster command: send it without an enclave"
            )
        return
    if not ctx.enclave:
        if not root:
            raise ErrPermission
        raise bad_request(f"{command.name} needs an enclave: send it to /v1/kms/ENCLAVE")
    if resolve_caller:
        authz.subject(state, ctx.caller, root, ctx.enclave)


def _authorize(state: State, ctx: CallContext, action: str, argument: str):
    return authz.authorize(
        state, ctx.caller, ctx.is_sysadmin, ctx.enclave or None, action, argument
    )


def _visible(state: State, ctx: CallContext, action: str, prefix: str):
    return authz.authorize_list(
        state, ctx.caller, ctx.is_sysadmin, ctx.enclave or None, action, prefix
    )


def _stamp(field, ns: int) -> None:
    field.FromNanoseconds(ns)


# --- responses ---------------------------------------------------------------


def _enclave_response(enclave) -> pb.EnclaveStatusResponse:
    out = pb.EnclaveStatusResponse(Name=enclave.name, CreatedBy=enclave.created_by)
    _stamp(out.CreatedAt, enclave.created_at)
    return out


def _key_response(status: reads.KeyStatus) -> pb.KeyStatusResponse:
    out = pb.KeyStatusResponse(
        Name=status.name,
        Version=status.version,
        Type=status.record.key_type,
        CreatedBy=status.record.created_by,
    )
    _stamp(out.CreatedAt, status.record.created_at)
    return out


def _policy_status_response(policy) -> pb.PolicyStatusResponse:
    out = pb.PolicyStatusResponse(Name=policy.name, CreatedBy=policy.created_by)
    _stamp(out.CreatedAt, policy.created_at)
    return out


def _identity_response(status: reads.IdentityStatus) -> pb.IdentityResponse:
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


# --- reads -------------------------------------------------------------------


def _enclave_status(state, ctx, request):
    _authorize(state, ctx, "ENCLAVE:STATUS", request.Name)
    return _enclave_response(reads.enclave(state, request.Name))


def _list_enclaves(state, ctx, request):
    _visible(state, ctx, "ENCLAVE:LIST", request.Prefix)
    page = reads.list_enclaves(state, request.Prefix, request.ContinueAt, request.Limit)
    return pb.ListEnclavesResponse(
        Enclaves=[_enclave_response(e) for e in page.items], ContinueAt=page.continue_at
    )


def _key_status(state, ctx, request):
    _authorize(state, ctx, "KEY:STATUS", request.Name)
    return _key_response(reads.key_status(state, ctx.enclave, request.Name, request.Version))


def _encrypt(state, ctx, request):
    _authorize(state, ctx, "KEY:ENCRYPT", request.Name)
    version, ciphertext = reads.encrypt(
        state, ctx.enclave, request.Name, request.Version,
        request.Plaintext, request.AssociatedData,
    )
    return pb.EncryptResponse(Version=version, Ciphertext=ciphertext)


def _decrypt(state, ctx, request):
    _authorize(state, ctx, "KEY:DECRYPT", request.Name)
    plaintext = reads.decrypt(
        state, ctx.enclave, request.Name, request.Version,
        request.Ciphertext, request.AssociatedData,
    )
    return pb.DecryptResponse(Plaintext=plaintext)


def _generate(state, ctx, request):
    _authorize(state, ctx, "KEY:GENERATE", request.Name)
    version, plaintext, ciphertext = reads.generate_key(
        state, ctx.enclave, request.Name, request.Version,
        request.AssociatedData, request.Length,
    )
    return pb.GenerateKeyResponse(Version=version, Plaintext=plaintext, Ciphertext=ciphertext)


def _list_keys(state, ctx, request):
    visible = _visible(state, ctx, "KEY:LIST", request.Prefix)
    page = reads.list_keys(
        state, ctx.enclave, request.Prefix, request.ContinueAt, request.Limit, visible
    )
    return pb.ListKeysResponse(
        Keys=[_key_response(s) for s in page.items], ContinueAt=page.continue_at
    )


def _list_key_versions(state, ctx, request):
    _authorize(state, ctx, "KEY:LISTVERSIONS", request.Prefix)
    page = reads.list_key_versions(
        state, ctx.enclave, request.Prefix, request.ContinueAt, request.Limit
    )
    return pb.ListKeysResponse(
        Keys=[_key_response(s) for s in page.items], ContinueAt=page.continue_at
    )


def _mac(state, ctx, request):
    _authorize(state, ctx, "KEY:MAC", request.Name)
    version, tag = reads.mac(state, ctx.enclave, request.Name, request.Version, request.Message)
    return pb.MACResponse(Version=version, MAC=tag)


def _get_policy(state, ctx, request):
    _authorize(state, ctx, "POLICY:GET", request.Name)
    policy = reads.policy(state, ctx.enclave, request.Name)
    out = pb.PolicyResponse(Name=policy.name, CreatedBy=policy.created_by)
    rules_to_proto(policy.allow, out.Allow)
    rules_to_proto(policy.deny, out.Deny)
    _stamp(out.CreatedAt, policy.created_at)
    return out


def _policy_status(state, ctx, request):
    _authorize(state, ctx, "POLICY:STATUS", request.Name)
    return _policy_status_response(reads.policy(state, ctx.enclave, request.Name))


def _list_policies(state, ctx, request):
    visible = _visible(state, ctx, "POLICY:LIST", request.Prefix)
    page = reads.list_policies(
        state, ctx.enclave, request.Prefix, request.ContinueAt, request.Limit, visible
    )
    return pb.ListPoliciesResponse(
        Policies=[_policy_status_response(p) for p in page.items], ContinueAt=page.continue_at
    )


def _identity_status(state, ctx, request):
    """
    IDENTITY:STATUS.  An empty identity means the caller itself, which any
    caller known in the enclave may look up without a policy; for the
    SysAdmin, who lives in no enclave, the answer is made up on the spot.
    """
    if request.Identity == "" and ctx.is_sysadmin:
        authz.subject(state, ctx.caller, True, ctx.enclave)
        return pb.IdentityResponse(
            Identity=ctx.caller, Privilege=PRIVILEGE_NUMBERS[SYSADMIN], CreatedBy=ctx.caller
        )
    target = request.Identity or ctx.caller
    if target == ctx.caller:
        authz.subject(state, ctx.caller, ctx.is_sysadmin, ctx.enclave)
    else:
        _authorize(state, ctx, "IDENTITY:STATUS", target)
    return _identity_response(reads.identity(state, ctx.enclave, target))


def _list_identities(state, ctx, request):
    visible = _visible(state, ctx, "IDENTITY:LIST", request.Prefix)
    page = reads.list_identities(
        state, ctx.enclave, request.Prefix, request.ContinueAt, request.Limit, visible
    )
    return pb.ListIdentitiesResponse(
        Identities=[_identity_response(s) for s in page.items], ContinueAt=page.continue_at
    )


_READS = {
    103: _enclave_status,
    104: _list_enclaves,
    204: _key_status,
    205: _encrypt,
    206: _decrypt,
    207: _generate,
    208: _list_keys,
    209: _list_key_versions,
    210: _mac,
    304: _get_policy,
    305: _policy_status,
    306: _list_policies,
    403: _identity_status,
    404: _list_identities,
}


def execute_read(state, ctx: CallContext, command: Command, request, *, cluster_status=None):
    """
    Answer one read command (one frame of a batch) from the local state.

    @param state: the applied L{State} (or the L{StateMachine} holding it).
    @param command: the row of L{minkms.wire.commands} for the frame's code.
    @param request: the decoded protobuf request message.
    @param cluster_status: for CLUSTER:STATUS, a callable returning the
        node's C{ClusterStatusResponse}; without it the command is 501.
    @return: the protobuf response message.
    @raise KMSError: the error for the whole request.
    """
    if command.write:
        raise internal(f"{command.name} is a write command")
    state = _state(state)
    _check_scope(state, ctx, command, resolve_caller=False)
    if command.code == CLUSTER_STATUS:
        if cluster_status is None:
            raise not_implemented(f"{command.name} is answered by the cluster node")
        return cluster_status()
    handler = _READS.get(command.code)
    if handler is None:
        raise bad_request(f"unknown command {command.code}")
    return handler(state, ctx, request)


# --- writes ------------------------------------------------------------------


def _common(ctx: CallContext) -> dict:
    return {"caller": ctx.caller, "sysadmin": ctx.is_sysadmin, "time": ctx.now_ns}


def _build(ctx: CallContext, code: int, request) -> sc.ClientCommand:
    common = _common(ctx)
    if code == 101:
        return sc.CreateEnclave(name=request.Name, **common)
    if code == 102:
        return sc.DeleteEnclave(name=request.Name, **common)
    enclave = {"enclave": ctx.enclave, **common}
    if code == 201:
        return sc.CreateKey(
            name=request.Name,
            key_type=request.Type,
            add_version=request.AddVersion,
            material=crypto.new_key_material(),
            **enclave,
        )
    if code == 202:
        return sc.DeleteKey(
            name=request.Name, version=request.Version, all_versions=request.AllVersions, **enclave
        )
    if code == 203:
        return sc.ImportKey(
            name=request.Name, key_type=request.Type, material=request.Key, **enclave
        )
    if code == 301:
        return sc.CreatePolicy(
            name=request.Name,
            allow=raw_rules_from_proto(request.Allow),
            deny=raw_rules_from_proto(request.Deny),
            **enclave,
        )
    if code == 302:
        return sc.DeletePolicy(name=request.Name, **enclave)
    if code == 303:
        return sc.AssignPolicy(identity=request.Identity, policy=request.Policy, **enclave)
    if code == 401:
        return sc.CreateIdentity(
            identity=request.Identity,
            privilege=request.Privilege,
            service_account=request.IsServiceAccount,
            tags=dict(sorted(request.Tags.items())),
            **enclave,
        )
    if code == 402:
        return sc.DeleteIdentity(identity=request.Identity, **enclave)
    raise bad_request(f"unknown command {code}")


_NEW_NAMES = {101: "enclave", 201: "key", 203: "key", 301: "policy"}


def prepare_write(state, ctx: CallContext, command: Command, request) -> sc.ClientCommand:
    """
    Turn one write request into the state-machine command to propose.

    Authorizes, dry-runs the command against the local state (so most
    errors are answered without a round of replication), checks the full
    name rules (see L{minkms.state.arguments}), generates key material and
    stamps the time.

    @return: a command; propose C{command.encode()}, then pass the apply
        result to L{result_error}.
    @raise KMSError: why the write cannot be proposed.  Cluster membership
        commands (codes 1, 2, 4, 5, 6) belong to the node layer: 403 for
        anyone but the SysAdmin, else 501 here.
    """
    if not command.write:
        raise internal(f"{command.name} is a read command")
    state = _state(state)
    _check_scope(state, ctx, command)
    if command.code in CLUSTER_NODE_WRITES:
        raise not_implemented(f"{command.name} is handled by the cluster node, not implemented here")
    prepared = _build(ctx, command.code, request)
    error = check(state, prepared)
    if error is not None:
        raise error
    kind = _NEW_NAMES.get(command.code)
    if kind is not None:
        validate_name(kind, request.Name)
    return prepared

