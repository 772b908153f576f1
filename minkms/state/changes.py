"""
The write commands of the state machine: the values a proposer puts into
the replicated log (DESIGN decision 7).

A command carries every input that must not depend on the node applying
it: the caller's identity, whether the proposer authenticated the caller as
the SysAdmin (the SysAdmin identity is derived from the HSM key and not
stored in the state), the time chosen by the proposer and any key material
generated before proposing.  Arguments are carried as the client sent them;
apply validates them.

Encoding: UTF-8 JSON with sorted keys and no whitespace, one object per
command::

    {"add_version":false,"caller":"h1:...","enclave":"e1","key_type":"",
     "material":"<base64>","name":"k","op":"key.create","sysadmin":false,
     "time":1700000000000000000,"v":1}

C{v} is the format version and C{op} the type tag; bytes are standard base64
with padding, Decoding is strict: unknown
tags, missing or extra fields and wrong types are rejected.
"""

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import attrs

FORMAT_VERSION = 1

Tags = dict[str, str]
RawRules = dict[str, tuple[str, ...]]

_T = TypeVar("_T")


class CommandError(ValueError):
    """Bytes that do not decode to a command."""


@attrs.frozen(kw_only=True)
class Command:
    """Base of every state-machine command."""

    op: ClassVar[str] = ""

    def encode(self) -> bytes:
        """The canonical bytes of this command (equal commands, equal bytes)."""
        doc: dict[str, Any] = {"op": self.op, "v": FORMAT_VERSION}
        for name, encoder, _ in _LAYOUTS[type(self)]:
            doc[name] = encoder(getattr(self, name))
        return _JSON.encode(doc).encode("ascii")


@attrs.frozen(kw_only=True)
class ClientCommand(Command):
    """
    A command made from a client request.

    @ivar caller: the authenticated identity of the client.
    @ivar sysadmin: the proposer authenticated C{caller} as the SysAdmin.
    @ivar time: the proposer's clock, nanoseconds since the epoch; used as
        C{created_at}.
    """

    caller: str
    sysadmin: bool
    time: int


@attrs.frozen(kw_only=True)
class CreateEnclave(ClientCommand):
    """ENCLAVE:CREATE."""

    op: ClassVar[str] = "enclave.create"
    name: str


@attrs.frozen(kw_only=True)
class DeleteEnclave(ClientCommand):
    """ENCLAVE:DELETE, with everything in the enclave."""

    op: ClassVar[str] = "enclave.delete"
    name: str


@attrs.frozen(kw_only=True)
class CreateKey(ClientCommand):
    """KEY:CREATE: a new key, or a new version when C{add_version}."""

    op: ClassVar[str] = "key.create"
    enclave: str
    name: str
    key_type: str
    add_version: bool
    material: bytes = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class ImportKey(ClientCommand):
    """KEY:IMPORT (code 203): a new key from client-supplied material."""

    op: ClassVar[str] = "key.import"
    enclave: str
    name: str
    key_type: str
    material: bytes = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class DeleteKey(ClientCommand):
    """KEY:DELETE: the latest version, one version or the whole key."""

    op: ClassVar[str] = "key.delete"
    enclave: str
    name: str
    version: int
    all_versions: bool


@attrs.frozen(kw_only=True)
class CreatePolicy(ClientCommand):
    """POLICY:CREATE (create or overwrite); rules as sent, validated at apply."""

    op: ClassVar[str] = "policy.create"
    enclave: str
    name: str
    allow: RawRules
    deny: RawRules


@attrs.frozen(kw_only=True)
class DeletePolicy(ClientCommand):
    """POLICY:DELETE."""

    op: ClassVar[str] = "policy.delete"
    enclave: str
    name: str


@attrs.frozen(kw_only=True)
class AssignPolicy(ClientCommand):
    """POLICY:ASSIGN."""

    op: ClassVar[str] = "policy.assign"
    enclave: str
    identity: str
    policy: str


@attrs.frozen(kw_only=True)
class CreateIdentity(ClientCommand):
    """IDENTITY:CREATE (create or overwrite)."""

    op: ClassVar[str] = "identity.create"
    enclave: str
    identity: str
    privilege: str
    service_account: bool
    tags: Tags


@attrs.frozen(kw_only=True)
class DeleteIdentity(ClientCommand):
    """IDENTITY:DELETE, with the identity's service accounts."""

    op: ClassVar[str] = "identity.delete"
    enclave: str
    identity: str


@attrs.frozen(kw_only=True)
class RestoreState(ClientCommand):
    """
    C{minkms restore}: replace enclaves, keys, identities and policies by
    those of a backup (a state snapshot); the membership is kept.
    """

    op: ClassVar[str] = "state.restore"
    state: bytes


COMMAND_TYPES = {
    cls.op: cls
    for cls in (
        RestoreState,
        CreateEnclave,
        DeleteEnclave,
        CreateKey,
        ImportKey,
        DeleteKey,
        CreatePolicy,
        DeletePolicy,
        AssignPolicy,
        CreateIdentity,
        DeleteIdentity,
    )
}


def decode(data: bytes) -> Command:
    """
    Parse bytes made by L{Command.encode}.

    @raise CommandError: for anything else.
    """
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise CommandError(f"not a JSON command: {e}") from None
    if not isinstance(doc, dict):
        raise CommandError("not a JSON object")
    if doc.get("v") != FORMAT_VERSION or type(doc.get("v")) is not int:
        raise CommandError(f"unsupported command format {doc.get('v')!r}")
    op = doc.get("op")
    cls = COMMAND_TYPES.get(op) if isinstance(op, str) else None
    if cls is None:
        raise CommandError(f"unknown command {doc.get('op')!r}")
    layout = _LAYOUTS[cls]
    expected = _NAMES[cls]
    if doc.keys() != expected:
        raise CommandError(f"{cls.op}: fields {sorted(set(doc) ^ expected)} missing or unexpected")
    values = {}
    for name, _, decoder in layout:
        try:
            values[name] = decoder(doc[name])
        except (TypeError, ValueError, binascii.Error):
            raise CommandError(f"{cls.op}: bad value for {name}") from None
    return cls(**values)


def _expect(value: object, kind: type[_T]) -> _T:
    if type(value) is not kind:
        raise TypeError(kind.__name__)
    return value


def _decode_bytes(value: object) -> bytes:
    return base64.b64decode(_expect(value, str), validate=True)


def _decode_int(value: object) -> int:
    number = _expect(value, int)
    if not 0 <= number < 2**63:
        raise ValueError("out of range")
    return number


def _decode_tags(value: object) -> Tags:
    return {_expect(k, str): _expect(v, str) for k, v in _expect(value, dict).items()}


def _decode_rules(value: object) -> RawRules:
    return {
        _expect(action, str): tuple(_expect(p, str) for p in _expect(patterns, list))
        for action, patterns in _expect(value, dict).items()
    }


_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
"""The canonical encoder, made once (C{json.dumps} with options makes one per call)."""

_ENCODERS: dict[object, Callable[[Any], Any]] = {
    str: lambda v: v,
    bool: lambda v: v,
    int: lambda v: v,
    bytes: lambda v: base64.b64encode(v).decode("ascii"),
    Tags: lambda v: dict(v),
    RawRules: lambda v: {action: list(patterns) for action, patterns in v.items()},
}

_DECODERS: dict[object, Callable[[Any], Any]] = {
    str: lambda v: _expect(v, str),
    bool: lambda v: _expect(v, bool),
    int: _decode_int,
    bytes: _decode_bytes,
    Tags: _decode_tags,
    RawRules: _decode_rules,
}

_LAYOUTS: dict[type[Command], tuple[tuple[str, Callable[[Any], Any], Callable[[Any], Any]], ...]] = {
    cls: tuple((f.name, _ENCODERS[f.type], _DECODERS[f.type]) for f in attrs.fields(cls))
    for cls in COMMAND_TYPES.values()
}
"""Each command's fields: name, encoder and decoder, worked out once."""

_NAMES: dict[type[Command], frozenset[str]] = {
    cls: frozenset(name for name, _, _ in layout) | {"op", "v"} for cls, layout in _LAYOUTS.items()
}
"""The keys of each command's JSON object."""
