"""
The way from a row of the command table (L{minkms.wire.commands}) to its
responder in L{minkms.kms.answers} or L{minkms.kms.proposals}, with the
checks every command passes on the way; pure (no Twisted, no I/O).

  - L{execute_read} answers a read command from the local applied state;
  - L{prepare_write} turns a write request into a state change (authorized,
    dry-run against the local state, key material generated, time stamped)
    that the server proposes as C{change.encode()};
  - L{result_error} reads the outcome of applying it.

The cluster rows (membership, CLUSTER:STATUS) are the node's: see
L{minkms.server.membership}.

Order of checks everywhere: authenticate -> authorize (403) -> existence
(404/409) -> validation (400).  A caller that is not the SysAdmin never
learns whether an enclave exists.

Prepare on the leader where possible: the dry run on a lagging follower
may report a key missing that the leader already has.  Whatever the dry
run says, apply checks again.
"""

import attrs

from minkms.errors import ErrPermission, bad_request, internal
from minkms.kms.answers import answers
from minkms.kms.proposals import proposals
from minkms.names import validate_name
from minkms.state import authz, changes as sc
from minkms.state.machine import StateMachine, check, result_error
from minkms.state.model import State
from minkms.wire.commands import BY_LISTING, BY_POLICY, BY_SELF_OR_POLICY, SCOPE_CLUSTER, Command

__all__ = ["CallContext", "execute_read", "prepare_write", "result_error"]


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
    (C{resolve_caller=False}) to their row's authorization rule, which runs
    before anything else, so the caller is resolved once per frame.
    """
    root = ctx.is_sysadmin
    if command.scope == SCOPE_CLUSTER:
        if not root:
            raise ErrPermission
        if ctx.enclave:
            raise bad_request(f"{command.name} is a cluster command: send it without an enclave")
        return
    if not ctx.enclave:
        if not root:
            raise ErrPermission
        raise bad_request(f"{command.name} needs an enclave: send it to /v1/kms/ENCLAVE")
    if resolve_caller:
        authz.subject(state, ctx.caller, root, ctx.enclave)


def _authorize_read(state: State, ctx: CallContext, command: Command, request):
    """
    Authorize a read by its row's rule (L{minkms.wire.commands.BY_POLICY}
    and friends), before anything is looked up.

    @return: the listing filter of a L{BY_LISTING} row (None: all names).
    """
    argument = getattr(request, command.argument)
    enclave = ctx.enclave or None
    if command.access == BY_POLICY:
        authz.authorize(state, ctx.caller, ctx.is_sysadmin, enclave, command.name, argument)
        return None
    if command.access == BY_LISTING:
        return authz.authorize_list(state, ctx.caller, ctx.is_sysadmin, enclave, command.name, argument)
    if command.access == BY_SELF_OR_POLICY:
        target = argument or ctx.caller
        if target == ctx.caller:
            authz.subject(state, ctx.caller, ctx.is_sysadmin, ctx.enclave)
        else:
            authz.authorize(state, ctx.caller, ctx.is_sysadmin, enclave, command.name, target)
        return None
    raise internal(f"{command.name}: no read authorization rule {command.access!r}")


def execute_read(state, ctx: CallContext, command: Command, request):
    """
    Answer one read command (one frame of a batch) from the local state.

    @param state: the applied L{State} (or the L{StateMachine} holding it).
    @param command: the row of L{minkms.wire.commands} for the frame's code.
    @param request: the decoded protobuf request message.
    @return: the protobuf response message.
    @raise KMSError: the error for the whole request.
    """
    if command.write:
        raise internal(f"{command.name} is a write command")
    state = _state(state)
    _check_scope(state, ctx, command, resolve_caller=False)
    responder = answers.get(command.code)
    if responder is None:
        raise internal(f"{command.name} is answered by the cluster node")
    visible = _authorize_read(state, ctx, command, request)
    return responder(state, ctx, request, visible)


def prepare_write(state, ctx: CallContext, command: Command, request) -> sc.ClientCommand:
    """
    Turn one write request into the state change to propose.

    Authorizes, dry-runs the change against the local state (so most
    errors are answered without a round of replication), checks the full
    name rules (see L{minkms.state.arguments}), generates key material and
    stamps the time.

    @return: a change; propose C{change.encode()}, then pass the apply
        result to L{result_error}.
    @raise KMSError: why the write cannot be proposed.
    """
    if not command.write:
        raise internal(f"{command.name} is a read command")
    state = _state(state)
    _check_scope(state, ctx, command)
    responder = proposals.get(command.code)
    if responder is None:
        raise internal(f"{command.name} is run by the cluster node")
    proposal = responder(ctx, request)
    error = check(state, proposal.change)
    if error is not None:
        raise error
    if proposal.new_name is not None:
        validate_name(*proposal.new_name)
    return proposal.change
