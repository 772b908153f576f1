import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrResponse(_message.Message):
    __slots__ = ("Message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    Message: str
    def __init__(self, Message: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("Prefix", "ContinueAt", "Limit")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    CONTINUEAT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    Prefix: str
    ContinueAt: str
    Limit: int
    def __init__(self, Prefix: _Optional[str] = ..., ContinueAt: _Optional[str] = ..., Limit: _Optional[int] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddClusterNodeRequest(_message.Message):
    __slots__ = ("Host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    Host: str
    def __init__(self, Host: _Optional[str] = ...) -> None: ...

class RemoveClusterNodeRequest(_message.Message):
    __slots__ = ("Host", "DeleteClusterOnHost")
    HOST_FIELD_NUMBER: _ClassVar[int]
    DELETECLUSTERONHOST_FIELD_NUMBER: _ClassVar[int]
    Host: str
    DeleteClusterOnHost: bool
    def __init__(self, Host: _Optional[str] = ..., DeleteClusterOnHost: _Optional[bool] = ...) -> None: ...

class EditClusterRequest(_message.Message):
    __slots__ = ("Host", "RemoveIDs")
    HOST_FIELD_NUMBER: _ClassVar[int]
    REMOVEIDS_FIELD_NUMBER: _ClassVar[int]
    Host: str
    RemoveIDs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, Host: _Optional[str] = ..., RemoveIDs: _Optional[_Iterable[int]] = ...) -> None: ...

class AddHSMRequest(_message.Message):
    __slots__ = ("Name", "Overwrite")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Overwrite: bool
    def __init__(self, Name: _Optional[str] = ..., Overwrite: _Optional[bool] = ...) -> None: ...

class RemoveHSMRequest(_message.Message):
    __slots__ = ("Name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    Name: str
    def __init__(self, Name: _Optional[str] = ...) -> None: ...

class ServerStatusResponse(_message.Message):
    __slots__ = ("Version", "APIVersion", "Host", "UpTime", "Role", "Commit", "Nodes", "ID", "LeaderID", "LastHeartbeat", "HeartbeatInterval", "ElectionTimeout", "OS", "Arch", "CPUs", "UsableCPUs", "HeapMemInUse", "StackMemInUse", "HSMs", "ConfiguredHSMs")
    class NodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APIVERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LEADERID_FIELD_NUMBER: _ClassVar[int]
    LASTHEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEATINTERVAL_FIELD_NUMBER: _ClassVar[int]
    ELECTIONTIMEOUT_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    USABLECPUS_FIELD_NUMBER: _ClassVar[int]
    HEAPMEMINUSE_FIELD_NUMBER: _ClassVar[int]
    STACKMEMINUSE_FIELD_NUMBER: _ClassVar[int]
    HSMS_FIELD_NUMBER: _ClassVar[int]
    CONFIGUREDHSMS_FIELD_NUMBER: _ClassVar[int]
    Version: str
    APIVersion: str
    Host: str
    UpTime: _duration_pb2.Duration
    Role: str
    Commit: int
    Nodes: _containers.ScalarMap[int, str]
    ID: int
    LeaderID: int
    LastHeartbeat: _duration_pb2.Duration
    HeartbeatInterval: _duration_pb2.Duration
    ElectionTimeout: _duration_pb2.Duration
    OS: str
    Arch: str
    CPUs: int
    UsableCPUs: int
    HeapMemInUse: int
    StackMemInUse: int
    HSMs: _containers.RepeatedScalarFieldContainer[str]
    ConfiguredHSMs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, Version: _Optional[str] = ..., APIVersion: _Optional[str] = ..., Host: _Optional[str] = ..., UpTime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., Role: _Optional[str] = ..., Commit: _Optional[int] = ..., Nodes: _Optional[_Mapping[int, str]] = ..., ID: _Optional[int] = ..., LeaderID: _Optional[int] = ..., LastHeartbeat: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., HeartbeatInterval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ElectionTimeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., OS: _Optional[str] = ..., Arch: _Optional[str] = ..., CPUs: _Optional[int] = ..., UsableCPUs: _Optional[int] = ..., HeapMemInUse: _Optional[int] = ..., StackMemInUse: _Optional[int] = ..., HSMs: _Optional[_Iterable[str]] = ..., ConfiguredHSMs: _Optional[_Iterable[str]] = ...) -> None: ...

class ClusterStatusResponse(_message.Message):
    __slots__ = ("NodesUp", "NodesDown")
    class NodesUpEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: ServerStatusResponse
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[ServerStatusResponse, _Mapping]] = ...) -> None: ...
    class NodesDownEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    NODESUP_FIELD_NUMBER: _ClassVar[int]
    NODESDOWN_FIELD_NUMBER: _ClassVar[int]
    NodesUp: _containers.MessageMap[int, ServerStatusResponse]
    NodesDown: _containers.ScalarMap[int, str]
    def __init__(self, NodesUp: _Optional[_Mapping[int, ServerStatusResponse]] = ..., NodesDown: _Optional[_Mapping[int, str]] = ...) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("Version", "Commit", "APIVersion", "Host", "FIPS140")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    APIVERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    FIPS140_FIELD_NUMBER: _ClassVar[int]
    Version: str
    Commit: str
    APIVersion: str
    Host: str
    FIPS140: bool
    def __init__(self, Version: _Optional[str] = ..., Commit: _Optional[str] = ..., APIVersion: _Optional[str] = ..., Host: _Optional[str] = ..., FIPS140: _Optional[bool] = ...) -> None: ...

class ProfileStatusResponse(_message.Message):
    __slots__ = ("Started", "CPU", "Heap", "Goroutine", "Thread", "BlockRate", "MutexFraction")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    HEAP_FIELD_NUMBER: _ClassVar[int]
    GOROUTINE_FIELD_NUMBER: _ClassVar[int]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    BLOCKRATE_FIELD_NUMBER: _ClassVar[int]
    MUTEXFRACTION_FIELD_NUMBER: _ClassVar[int]
    Started: _timestamp_pb2.Timestamp
    CPU: bool
    Heap: bool
    Goroutine: bool
    Thread: bool
    BlockRate: int
    MutexFraction: int
    def __init__(self, Started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., CPU: _Optional[bool] = ..., Heap: _Optional[bool] = ..., Goroutine: _Optional[bool] = ..., Thread: _Optional[bool] = ..., BlockRate: _Optional[int] = ..., MutexFraction: _Optional[int] = ...) -> None: ...

class CreateEnclaveRequest(_message.Message):
    __slots__ = ("Name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    Name: str
    def __init__(self, Name: _Optional[str] = ...) -> None: ...

class DeleteEnclaveRequest(_message.Message):
    __slots__ = ("Name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    Name: str
    def __init__(self, Name: _Optional[str] = ...) -> None: ...

class EnclaveStatusRequest(_message.Message):
    __slots__ = ("Name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    Name: str
    def __init__(self, Name: _Optional[str] = ...) -> None: ...

class EnclaveStatusResponse(_message.Message):
    __slots__ = ("Name", "CreatedAt", "CreatedBy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    CREATEDBY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    CreatedAt: _timestamp_pb2.Timestamp
    CreatedBy: str
    def __init__(self, Name: _Optional[str] = ..., CreatedAt: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., CreatedBy: _Optional[str] = ...) -> None: ...

class ListEnclavesResponse(_message.Message):
    __slots__ = ("Enclaves", "ContinueAt")
    ENCLAVES_FIELD_NUMBER: _ClassVar[int]
    CONTINUEAT_FIELD_NUMBER: _ClassVar[int]
    Enclaves: _containers.RepeatedCompositeFieldContainer[EnclaveStatusResponse]
    ContinueAt: str
    def __init__(self, Enclaves: _Optional[_Iterable[_Union[EnclaveStatusResponse, _Mapping]]] = ..., ContinueAt: _Optional[str] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("Name", "Type", "AddVersion")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ADDVERSION_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Type: str
    AddVersion: bool
    def __init__(self, Name: _Optional[str] = ..., Type: _Optional[str] = ..., AddVersion: _Optional[bool] = ...) -> None: ...

class ImportKeyRequest(_message.Message):
    __slots__ = ("Name", "Type", "Key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Type: str
    Key: bytes
    def __init__(self, Name: _Optional[str] = ..., Type: _Optional[str] = ..., Key: _Optional[bytes] = ...) -> None: ...

class DeleteKeyRequest(_message.Message):
    __slots__ = ("Name", "Version", "AllVersions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLVERSIONS_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Version: int
    AllVersions: bool
    def __init__(self, Name: _Optional[str] = ..., Version: _Optional[int] = ..., AllVersions: _Optional[bool] = ...) -> None: ...

class KeyStatusRequest(_message.Message):
    __slots__ = ("Name", "Version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Version: int
    def __init__(self, Name: _Optional[str] = ..., Version: _Optional[int] = ...) -> None: ...

class KeyStatusResponse(_message.Message):
    __slots__ = ("Name", "Version", "Type", "CreatedAt", "CreatedBy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    CREATEDBY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Version: int
    Type: str
    CreatedAt: _timestamp_pb2.Timestamp
    CreatedBy: str
    def __init__(self, Name: _Optional[str] = ..., Version: _Optional[int] = ..., Type: _Optional[str] = ..., CreatedAt: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., CreatedBy: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("Keys", "ContinueAt")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    CONTINUEAT_FIELD_NUMBER: _ClassVar[int]
    Keys: _containers.RepeatedCompositeFieldContainer[KeyStatusResponse]
    ContinueAt: str
    def __init__(self, Keys: _Optional[_Iterable[_Union[KeyStatusResponse, _Mapping]]] = ..., ContinueAt: _Optional[str] = ...) -> None: ...

class EncryptRequest(_message.Message):
    __slots__ = ("Name", "Version", "Plaintext", "AssociatedData")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATEDDATA_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Version: int
    Plaintext: bytes
    AssociatedData: bytes
    def __init__(self, Name: _Optional[str] = ..., Version: _Optional[int] = ..., Plaintext: _Optional[bytes] = ..., AssociatedData: _Optional[bytes] = ...) -> None: ...

class EncryptResponse(_message.Message):
    __slots__ = ("Version", "Ciphertext")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    Version: int
    Ciphertext: bytes
    def __init__(self, Version: _Optional[int] = ..., Ciphertext: _Optional[bytes] = ...) -> None: ...

class GenerateKeyRequest(_message.Message):
    __slots__ = ("Name", "Version", "AssociatedData", "Length")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATEDDATA_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Version: int
    AssociatedData: bytes
    Length: int
    def __init__(self, Name: _Optional[str] = ..., Version: _Optional[int] = ..., AssociatedData: _Optional[bytes] = ..., Length: _Optional[int] = ...) -> None: ...

class GenerateKeyResponse(_message.Message):
    __slots__ = ("Version", "Plaintext", "Ciphertext")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    Version: int
    Plaintext: bytes
    Ciphertext: bytes
    def __init__(self, Version: _Optional[int] = ..., Plaintext: _Optional[bytes] = ..., Ciphertext: _Optional[bytes] = ...) -> None: ...

class DecryptRequest(_message.Message):
    __slots__ = ("Name", "Version", "Ciphertext", "AssociatedData")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATEDDATA_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Version: int
    Ciphertext: bytes
    AssociatedData: bytes
    def __init__(self, Name: _Optional[str] = ..., Version: _Optional[int] = ..., Ciphertext: _Optional[bytes] = ..., AssociatedData: _Optional[bytes] = ...) -> None: ...

class DecryptResponse(_message.Message):
    __slots__ = ("Plaintext",)
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    Plaintext: bytes
    def __init__(self, Plaintext: _Optional[bytes] = ...) -> None: ...

class MACRequest(_message.Message):
    __slots__ = ("Name", "Version", "Message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Version: int
    Message: bytes
    def __init__(self, Name: _Optional[str] = ..., Version: _Optional[int] = ..., Message: _Optional[bytes] = ...) -> None: ...

class MACResponse(_message.Message):
    __slots__ = ("Version", "MAC")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    Version: int
    MAC: bytes
    def __init__(self, Version: _Optional[int] = ..., MAC: _Optional[bytes] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RuleSet(_message.Message):
    __slots__ = ("Rules",)
    class RulesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Rule
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Rule, _Mapping]] = ...) -> None: ...
    RULES_FIELD_NUMBER: _ClassVar[int]
    Rules: _containers.MessageMap[str, Rule]
    def __init__(self, Rules: _Optional[_Mapping[str, Rule]] = ...) -> None: ...

class CreatePolicyRequest(_message.Message):
    __slots__ = ("Name", "Allow", "Deny")
    class AllowEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RuleSet
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RuleSet, _Mapping]] = ...) -> None: ...
    class DenyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RuleSet
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RuleSet, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Allow: _containers.MessageMap[str, RuleSet]
    Deny: _containers.MessageMap[str, RuleSet]
    def __init__(self, Name: _Optional[str] = ..., Allow: _Optional[_Mapping[str, RuleSet]] = ..., Deny: _Optional[_Mapping[str, RuleSet]] = ...) -> None: ...

class PolicyRequest(_message.Message):
    __slots__ = ("Name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    Name: str
    def __init__(self, Name: _Optional[str] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("Name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    Name: str
    def __init__(self, Name: _Optional[str] = ...) -> None: ...

class AssignPolicyRequest(_message.Message):
    __slots__ = ("Identity", "Policy")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    Identity: str
    Policy: str
    def __init__(self, Identity: _Optional[str] = ..., Policy: _Optional[str] = ...) -> None: ...

class PolicyStatusResponse(_message.Message):
    __slots__ = ("Name", "CreatedAt", "CreatedBy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    CREATEDBY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    CreatedAt: _timestamp_pb2.Timestamp
    CreatedBy: str
    def __init__(self, Name: _Optional[str] = ..., CreatedAt: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., CreatedBy: _Optional[str] = ...) -> None: ...

class PolicyResponse(_message.Message):
    __slots__ = ("Name", "Allow", "Deny", "CreatedAt", "CreatedBy")
    class AllowEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RuleSet
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RuleSet, _Mapping]] = ...) -> None: ...
    class DenyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RuleSet
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RuleSet, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    CREATEDBY_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Allow: _containers.MessageMap[str, RuleSet]
    Deny: _containers.MessageMap[str, RuleSet]
    CreatedAt: _timestamp_pb2.Timestamp
    CreatedBy: str
    def __init__(self, Name: _Optional[str] = ..., Allow: _Optional[_Mapping[str, RuleSet]] = ..., Deny: _Optional[_Mapping[str, RuleSet]] = ..., CreatedAt: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., CreatedBy: _Optional[str] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("Policies", "ContinueAt")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    CONTINUEAT_FIELD_NUMBER: _ClassVar[int]
    Policies: _containers.RepeatedCompositeFieldContainer[PolicyStatusResponse]
    ContinueAt: str
    def __init__(self, Policies: _Optional[_Iterable[_Union[PolicyStatusResponse, _Mapping]]] = ..., ContinueAt: _Optional[str] = ...) -> None: ...

class CreateIdentityRequest(_message.Message):
    __slots__ = ("Identity", "Privilege", "IsServiceAccount", "Tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGE_FIELD_NUMBER: _ClassVar[int]
    ISSERVICEACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    Identity: str
    Privilege: str
    IsServiceAccount: bool
    Tags: _containers.ScalarMap[str, str]
    def __init__(self, Identity: _Optional[str] = ..., Privilege: _Optional[str] = ..., IsServiceAccount: _Optional[bool] = ..., Tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class IdentityRequest(_message.Message):
    __slots__ = ("Identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    Identity: str
    def __init__(self, Identity: _Optional[str] = ...) -> None: ...

class DeleteIdentityRequest(_message.Message):
    __slots__ = ("Identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    Identity: str
    def __init__(self, Identity: _Optional[str] = ...) -> None: ...

class IdentityResponse(_message.Message):
    __slots__ = ("Identity", "Privilege", "Policy", "CreatedAt", "CreatedBy", "IsServiceAccount", "ServiceAccounts", "Tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    CREATEDBY_FIELD_NUMBER: _ClassVar[int]
    ISSERVICEACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SERVICEACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    Identity: str
    Privilege: int
    Policy: str
    CreatedAt: _timestamp_pb2.Timestamp
    CreatedBy: str
    IsServiceAccount: bool
    ServiceAccounts: _containers.RepeatedScalarFieldContainer[str]
    Tags: _containers.ScalarMap[str, str]
    def __init__(self, Identity: _Optional[str] = ..., Privilege: _Optional[int] = ..., Policy: _Optional[str] = ..., CreatedAt: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., CreatedBy: _Optional[str] = ..., IsServiceAccount: _Optional[bool] = ..., ServiceAccounts: _Optional[_Iterable[str]] = ..., Tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListIdentitiesResponse(_message.Message):
    __slots__ = ("Identities", "ContinueAt")
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    CONTINUEAT_FIELD_NUMBER: _ClassVar[int]
    Identities: _containers.RepeatedCompositeFieldContainer[IdentityResponse]
    ContinueAt: str
    def __init__(self, Identities: _Optional[_Iterable[_Union[IdentityResponse, _Mapping]]] = ..., ContinueAt: _Optional[str] = ...) -> None: ...

class LogRequest(_message.Message):
    __slots__ = ("Level", "Message", "Since", "TraceLevel")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TRACELEVEL_FIELD_NUMBER: _ClassVar[int]
    Level: int
    Message: str
    Since: _timestamp_pb2.Timestamp
    TraceLevel: int
    def __init__(self, Level: _Optional[int] = ..., Message: _Optional[str] = ..., Since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., TraceLevel: _Optional[int] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("Level", "Time", "Message", "Trace", "Request")
    class StackFrame(_message.Message):
        __slots__ = ("Function", "File", "Line")
        FUNCTION_FIELD_NUMBER: _ClassVar[int]
        FILE_FIELD_NUMBER: _ClassVar[int]
        LINE_FIELD_NUMBER: _ClassVar[int]
        Function: str
        File: str
        Line: int
        def __init__(self, Function: _Optional[str] = ..., File: _Optional[str] = ..., Line: _Optional[int] = ...) -> None: ...
    class LegacyRequest(_message.Message):
        __slots__ = ("Method", "Path", "Identity", "IP")
        METHOD_FIELD_NUMBER: _ClassVar[int]
        PATH_FIELD_NUMBER: _ClassVar[int]
        IDENTITY_FIELD_NUMBER: _ClassVar[int]
        IP_FIELD_NUMBER: _ClassVar[int]
        Method: str
        Path: str
        Identity: str
        IP: str
        def __init__(self, Method: _Optional[str] = ..., Path: _Optional[str] = ..., Identity: _Optional[str] = ..., IP: _Optional[str] = ...) -> None: ...
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    Level: int
    Time: _timestamp_pb2.Timestamp
    Message: str
    Trace: _containers.RepeatedCompositeFieldContainer[LogRecord.StackFrame]
    Request: LogRecord.LegacyRequest
    def __init__(self, Level: _Optional[int] = ..., Time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., Message: _Optional[str] = ..., Trace: _Optional[_Iterable[_Union[LogRecord.StackFrame, _Mapping]]] = ..., Request: _Optional[_Union[LogRecord.LegacyRequest, _Mapping]] = ...) -> None: ...
