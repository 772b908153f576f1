"""
The command table of C{/v1/kms} (spec section 4.5): code, canonical name,
scope, read/write, message types and whether kms-go batches it.

This is data, shared by the frame codec, the policy engine (names), the
API dispatcher and the client.
"""

import attrs
from google.protobuf.message import Message

from minkms.wire import kms_pb2 as pb

SCOPE_CLUSTER = "cluster"
SCOPE_ENCLAVE = "enclave"


@attrs.frozen
class Command:
    """One row of the command table."""

    code: int
    name: str
    write: bool
    scope: str
    request: type[Message]
    response: type[Message] | None
    batch: bool


def _c(
    code: int,
    name: str,
    write: bool,
    scope: str,
    request: type[Message],
    response: type[Message] | None,
    batch: bool,
) -> Command:
    return Command(code, name, write, scope, request, response, batch)


_C, _E = SCOPE_CLUSTER, SCOPE_ENCLAVE

COMMANDS = [
    _c(1, "CLUSTER:ADDNODE", True, _C, pb.AddClusterNodeRequest, None, False),
    _c(2, "CLUSTER:REMOVENODE", True, _C, pb.RemoveClusterNodeRequest, None, False),
    _c(3, "CLUSTER:STATUS", False, _C, pb.ClusterStatusRequest, pb.ClusterStatusResponse, False),
    _c(4, "CLUSTER:EDIT", True, _C, pb.EditClusterRequest, None, False),
    _c(5, "CLUSTER:ADDHSM", True, _C, pb.AddHSMRequest, None, False),
    _c(6, "CLUSTER:REMOVEHSM", True, _C, pb.RemoveHSMRequest, None, False),
    _c(101, "ENCLAVE:CREATE", True, _C, pb.CreateEnclaveRequest, None, False),
    _c(102, "ENCLAVE:DELETE", True, _C, pb.DeleteEnclaveRequest, None, False),
    _c(103, "ENCLAVE:STATUS", False, _C, pb.EnclaveStatusRequest, pb.EnclaveStatusResponse, True),
    _c(104, "ENCLAVE:LIST", False, _C, pb.ListRequest, pb.ListEnclavesResponse, False),
    _c(201, "KEY:CREATE", True, _E, pb.CreateKeyRequest, None, False),
    _c(202, "KEY:DELETE", True, _E, pb.DeleteKeyRequest, None, False),
    # Code 203 has no text name in kms-go ("!INVALID:203"); ours is KEY:IMPORT.
    _c(203, "KEY:IMPORT", True, _E, pb.ImportKeyRequest, None, False),
    _c(204, "KEY:STATUS", False, _E, pb.KeyStatusRequest, pb.KeyStatusResponse, True),
    _c(205, "KEY:ENCRYPT", False, _E, pb.EncryptRequest, pb.EncryptResponse, True),
    _c(206, "KEY:DECRYPT", False, _E, pb.DecryptRequest, pb.DecryptResponse, True),
    _c(207, "KEY:GENERATE", False, _E, pb.GenerateKeyRequest, pb.GenerateKeyResponse, True),
    _c(208, "KEY:LIST", False, _E, pb.ListRequest, pb.ListKeysResponse, False),
    _c(209, "KEY:LISTVERSIONS", False, _E, pb.ListRequest, pb.ListKeysResponse, False),
    _c(210, "KEY:MAC", False, _E, pb.MACRequest, pb.MACResponse, True),
    _c(301, "POLICY:CREATE", True, _E, pb.CreatePolicyRequest, None, False),
    _c(302, "POLICY:DELETE", True, _E, pb.DeletePolicyRequest, None, False),
    _c(303, "POLICY:ASSIGN", True, _E, pb.AssignPolicyRequest, None, False),
    _c(304, "POLICY:GET", False, _E, pb.PolicyRequest, pb.PolicyResponse, True),
    _c(305, "POLICY:STATUS", False, _E, pb.PolicyRequest, pb.PolicyStatusResponse, True),
    _c(306, "POLICY:LIST", False, _E, pb.ListRequest, pb.ListPoliciesResponse, False),
    _c(401, "IDENTITY:CREATE", True, _E, pb.CreateIdentityRequest, None, False),
    _c(402, "IDENTITY:DELETE", True, _E, pb.DeleteIdentityRequest, None, False),
    _c(403, "IDENTITY:STATUS", False, _E, pb.IdentityRequest, pb.IdentityResponse, True),
    _c(404, "IDENTITY:LIST", False, _E, pb.ListRequest, pb.ListIdentitiesResponse, False),
]

BY_CODE = {c.code: c for c in COMMANDS}
BY_NAME = {c.name: c for c in COMMANDS}

# Names a policy may mention: every named command kms-go knows (not 203).
POLICY_ACTIONS = frozenset(c.name for c in COMMANDS if c.code != 203)
