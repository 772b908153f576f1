"""
The one table of the commands of C{/v1/kms} (spec section 4.5).

Each command is declared here once, as Twisted's C{amp.Command} is: its
code (a named constant, so no code is a bare number anywhere else), its
canonical name, whether it reads or writes, who may send it, the protobuf
messages it carries, whether kms-go batches it, and the name of the
function that answers it.  That function registers on the row with a
L{Responders} registry where it is defined::

    answers = Responders()

    @answers.responder(KEY_STATUS)
    def key_status(state, ctx, request): ...

and the registry refuses a function the row does not name, so the table
always says where a command is answered.  The frame codec, the API, the
node, the policy engine (names) and the CLI all read this table.

Only protobuf is imported here: the table is data.
"""

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from minkms.wire import kms_pb2 as pb

Handler = TypeVar("Handler", bound=Callable[..., Any])

SCOPE_CLUSTER = "cluster"
"""Sent without an enclave, by the SysAdmin only."""
SCOPE_ENCLAVE = "enclave"
"""Sent to C{/v1/kms/ENCLAVE} by the SysAdmin or an identity of that enclave."""

READ = "read"
"""Answered by any node from its applied state; never replicated."""
WRITE = "write"
"""Replicated through the leader; answered once applied on this node."""

BY_POLICY = "policy"
"""
Authorization: the caller's privilege decides, and for a User its policy's
rule for the command's name on the request field L{Command.argument}.
"""
BY_LISTING = "listing"
"""
Authorization as L{BY_POLICY} on the C{Prefix}; a User sees only the
names its policy allows.
"""
BY_SELF_OR_POLICY = "self-or-policy"
"""
Authorization: any caller may name itself (or nobody, meaning itself);
naming another identity is L{BY_POLICY}.
"""
AT_APPLY = "at-apply"
"""
Authorization of a write: the state machine checks it (in the leader's
dry run, and again when the entry is applied, since rights may change
in between), on the request field L{Command.argument}.
"""
SYSADMIN_ONLY = "sysadmin"
"""Authorization of a command the node runs: the SysAdmin only."""

CLUSTER_ADDNODE = 1
CLUSTER_REMOVENODE = 2
CLUSTER_STATUS = 3
CLUSTER_EDIT = 4
CLUSTER_ADDHSM = 5
CLUSTER_REMOVEHSM = 6
ENCLAVE_CREATE = 101
ENCLAVE_DELETE = 102
ENCLAVE_STATUS = 103
ENCLAVE_LIST = 104
KEY_CREATE = 201
KEY_DELETE = 202
KEY_IMPORT = 203
KEY_STATUS = 204
KEY_ENCRYPT = 205
KEY_DECRYPT = 206
KEY_GENERATE = 207
KEY_LIST = 208
KEY_LISTVERSIONS = 209
KEY_MAC = 210
POLICY_CREATE = 301
POLICY_DELETE = 302
POLICY_ASSIGN = 303
POLICY_GET = 304
POLICY_STATUS = 305
POLICY_LIST = 306
IDENTITY_CREATE = 401
IDENTITY_DELETE = 402
IDENTITY_STATUS = 403
IDENTITY_LIST = 404


@attrs.frozen
class Command:
    """
    One row of the command table.

    @ivar code: the command code of the frames (spec section 4.1).
    @ivar name: the canonical name, as policies and audit records say it.
    @ivar kind: L{READ} or L{WRITE}.
    @ivar scope: L{SCOPE_CLUSTER} or L{SCOPE_ENCLAVE}: who may send it where.
    @ivar access: how the caller is authorized (L{BY_POLICY}, L{BY_LISTING},
        L{BY_SELF_OR_POLICY}, L{AT_APPLY} or L{SYSADMIN_ONLY}).
    @ivar argument: the request field authorization judges ("" if none).
    @ivar request: the protobuf request message type.
    @ivar response: the protobuf response type, or None (empty frames).
    @ivar batch: whether kms-go sends several frames in one request.
    @ivar handler: the dotted name of the function that answers it.
    """

    code: int
    name: str
    kind: str
    scope: str
    access: str
    argument: str
    request: type
    response: type | None
    batch: bool
    handler: str

    @property
    def write(self) -> bool:
        """Whether the command changes the replicated state."""
        return self.kind == WRITE


_C, _E = SCOPE_CLUSTER, SCOPE_ENCLAVE
_NODE = "minkms.server.membership."
_ANSWERS = "minkms.kms.answers."
_PROPOSALS = "minkms.kms.proposals."

# fmt: off
COMMANDS = [
    # code               name                   kind   scope access             argument    request                      response                   batch  handler
    Command(CLUSTER_ADDNODE, "CLUSTER:ADDNODE",   WRITE, _C, SYSADMIN_ONLY,     "",         pb.AddClusterNodeRequest,    None,                      False, _NODE + "add_node_command"),
    Command(CLUSTER_REMOVENODE, "CLUSTER:REMOVENODE", WRITE, _C, SYSADMIN_ONLY, "",         pb.RemoveClusterNodeRequest, None,                      False, _NODE + "remove_node_command"),
    Command(CLUSTER_STATUS, "CLUSTER:STATUS",     READ,  _C, SYSADMIN_ONLY,     "",         pb.ClusterStatusRequest,     pb.ClusterStatusResponse,  False, _NODE + "cluster_status_command"),
    Command(CLUSTER_EDIT, "CLUSTER:EDIT",         WRITE, _C, SYSADMIN_ONLY,     "",         pb.EditClusterRequest,       None,                      False, _NODE + "edit_command"),
    Command(CLUSTER_ADDHSM, "CLUSTER:ADDHSM",     WRITE, _C, SYSADMIN_ONLY,     "",         pb.AddHSMRequest,            None,                      False, _NODE + "hsm_command"),
    Command(CLUSTER_REMOVEHSM, "CLUSTER:REMOVEHSM", WRITE, _C, SYSADMIN_ONLY,   "",         pb.RemoveHSMRequest,         None,                      False, _NODE + "hsm_command"),
    Command(ENCLAVE_CREATE, "ENCLAVE:CREATE",     WRITE, _C, AT_APPLY,          "Name",     pb.CreateEnclaveRequest,     None,                      False, _PROPOSALS + "create_enclave"),
    Command(ENCLAVE_DELETE, "ENCLAVE:DELETE",     WRITE, _C, AT_APPLY,          "Name",     pb.DeleteEnclaveRequest,     None,                      False, _PROPOSALS + "delete_enclave"),
    Command(ENCLAVE_STATUS, "ENCLAVE:STATUS",     READ,  _C, BY_POLICY,         "Name",     pb.EnclaveStatusRequest,     pb.EnclaveStatusResponse,  True,  _ANSWERS + "enclave_status"),
    Command(ENCLAVE_LIST, "ENCLAVE:LIST",         READ,  _C, BY_LISTING,        "Prefix",   pb.ListRequest,              pb.ListEnclavesResponse,   False, _ANSWERS + "list_enclaves"),
    Command(KEY_CREATE, "KEY:CREATE",             WRITE, _E, AT_APPLY,          "Name",     pb.CreateKeyRequest,         None,                      False, _PROPOSALS + "create_key"),
    Command(KEY_DELETE, "KEY:DELETE",             WRITE, _E, AT_APPLY,          "Name",     pb.DeleteKeyRequest,         None,                      False, _PROPOSALS + "delete_key"),
    # Code 203 has no text name in kms-go ("!INVALID:203"); ours is KEY:IMPORT, authorized as KEY:CREATE.
    Command(KEY_IMPORT, "KEY:IMPORT",             WRITE, _E, AT_APPLY,          "Name",     pb.ImportKeyRequest,         None,                      False, _PROPOSALS + "import_key"),
    Command(KEY_STATUS, "KEY:STATUS",             READ,  _E, BY_POLICY,         "Name",     pb.KeyStatusRequest,         pb.KeyStatusResponse,      True,  _ANSWERS + "key_status"),
    Command(KEY_ENCRYPT, "KEY:ENCRYPT",           READ,  _E, BY_POLICY,         "Name",     pb.EncryptRequest,           pb.EncryptResponse,        True,  _ANSWERS + "encrypt"),
    Command(KEY_DECRYPT, "KEY:DECRYPT",           READ,  _E, BY_POLICY,         "Name",     pb.DecryptRequest,           pb.DecryptResponse,        True,  _ANSWERS + "decrypt"),
    Command(KEY_GENERATE, "KEY:GENERATE",         READ,  _E, BY_POLICY,         "Name",     pb.GenerateKeyRequest,       pb.GenerateKeyResponse,    True,  _ANSWERS + "generate"),
    Command(KEY_LIST, "KEY:LIST",                 READ,  _E, BY_LISTING,        "Prefix",   pb.ListRequest,              pb.ListKeysResponse,       False, _ANSWERS + "list_keys"),
    Command(KEY_LISTVERSIONS, "KEY:LISTVERSIONS", READ,  _E, BY_POLICY,         "Prefix",   pb.ListRequest,              pb.ListKeysResponse,       False, _ANSWERS + "list_key_versions"),
    Command(KEY_MAC, "KEY:MAC",                   READ,  _E, BY_POLICY,         "Name",     pb.MACRequest,               pb.MACResponse,            True,  _ANSWERS + "mac"),
    Command(POLICY_CREATE, "POLICY:CREATE",       WRITE, _E, AT_APPLY,          "Name",     pb.CreatePolicyRequest,      None,                      False, _PROPOSALS + "create_policy"),
    Command(POLICY_DELETE, "POLICY:DELETE",       WRITE, _E, AT_APPLY,          "Name",     pb.DeletePolicyRequest,      None,                      False, _PROPOSALS + "delete_policy"),
    Command(POLICY_ASSIGN, "POLICY:ASSIGN",       WRITE, _E, AT_APPLY,          "Policy",   pb.AssignPolicyRequest,      None,                      False, _PROPOSALS + "assign_policy"),
    Command(POLICY_GET, "POLICY:GET",             READ,  _E, BY_POLICY,         "Name",     pb.PolicyRequest,            pb.PolicyResponse,         True,  _ANSWERS + "get_policy"),
    Command(POLICY_STATUS, "POLICY:STATUS",       READ,  _E, BY_POLICY,         "Name",     pb.PolicyRequest,            pb.PolicyStatusResponse,   True,  _ANSWERS + "policy_status"),
    Command(POLICY_LIST, "POLICY:LIST",           READ,  _E, BY_LISTING,        "Prefix",   pb.ListRequest,              pb.ListPoliciesResponse,   False, _ANSWERS + "list_policies"),
    Command(IDENTITY_CREATE, "IDENTITY:CREATE",   WRITE, _E, AT_APPLY,          "Identity", pb.CreateIdentityRequest,    None,                      False, _PROPOSALS + "create_identity"),
    Command(IDENTITY_DELETE, "IDENTITY:DELETE",   WRITE, _E, AT_APPLY,          "Identity", pb.DeleteIdentityRequest,    None,                      False, _PROPOSALS + "delete_identity"),
    Command(IDENTITY_STATUS, "IDENTITY:STATUS",   READ,  _E, BY_SELF_OR_POLICY, "Identity", pb.IdentityRequest,          pb.IdentityResponse,       True,  _ANSWERS + "identity_status"),
    Command(IDENTITY_LIST, "IDENTITY:LIST",       READ,  _E, BY_LISTING,        "Prefix",   pb.ListRequest,              pb.ListIdentitiesResponse, False, _ANSWERS + "list_identities"),
]
# fmt: on

BY_CODE = {c.code: c for c in COMMANDS}
BY_NAME = {c.name: c for c in COMMANDS}

POLICY_ACTIONS = frozenset(c.name for c in COMMANDS if c.code != KEY_IMPORT)
"""Names a policy may mention: every named command kms-go knows (not 203)."""


class Responders:
    """
    The functions of one layer that answer rows of the table, registered
    on their rows (as C{amp.Command.responder} registers on a command).
    """

    def __init__(self) -> None:
        self._by_code: dict[int, Callable[..., Any]] = {}

    def responder(self, *commands: int) -> Callable[[Handler], Handler]:
        """
        A decorator: the function answers the commands with these codes.

        @raise ValueError: the table names another function for one of them,
            or one already has a responder here.
        """

        def register(function: Handler) -> Handler:
            name = f"{function.__module__}.{function.__qualname__}"
            for code in commands:
                row = BY_CODE[code]
                if row.handler != name:
                    raise ValueError(f"{row.name} is answered by {row.handler}, not {name}")
                if code in self._by_code:
                    raise ValueError(f"{row.name} has a responder already")
                self._by_code[code] = function
            return function

        return register

    def get(self, code: int) -> Callable[..., Any] | None:
        """The function answering C{code}, or None when it is not of this layer."""
        return self._by_code.get(code)

    def codes(self) -> frozenset[int]:
        """The codes this registry answers."""
        return frozenset(self._by_code)
