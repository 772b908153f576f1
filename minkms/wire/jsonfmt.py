"""
Proto-JSON (the proto3 JSON mapping) of our messages, as kms-go's protojson
reads and writes it: keys are the json_name of each field, 64-bit integers
are strings, bytes are standard base64, Duration is C{"1.500s"}, Timestamp
is RFC 3339.

Used for C{GET /version}, C{GET /v1/debug/pprof} and health replies when
the client does not ask for protobuf (L{negotiate}), for JSON error bodies,
and for the CLI's C{--json} output.  Output is compact (no spaces), fields
in declaration order and map keys ascending, so equal messages give equal
bytes.

L{negotiate} reads the C{Accept} header (spec section 3, row 1:
C{application/octet-stream} means protobuf, any other type proto-JSON).
kms-go sends C{Accept: application/*} for C{/version}, health and
C{/v1/kms} (so it gets JSON there) and C{Accept: application/octet-stream}
for the log stream and profiling.  Our rule: protobuf when
C{application/octet-stream} is listed (with q > 0) and C{application/json}
is not; JSON otherwise, including for a missing header, wildcards and a
header listing both.
"""

import base64
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message import Message

JSON = "application/json"
PROTOBUF = "application/octet-stream"
_INT64 = {FD.TYPE_INT64, FD.TYPE_UINT64, FD.TYPE_SINT64, FD.TYPE_FIXED64, FD.TYPE_SFIXED64}
_FLOATS = {FD.TYPE_FLOAT, FD.TYPE_DOUBLE}

_M = TypeVar("_M", bound=Message)

Accept = str | bytes | Iterable[str | bytes] | None
"""An C{Accept} header's value(s): a str or bytes, a list of them (a header sent several times), or None."""


def to_json(message: Message, defaults: bool = True) -> bytes:
    """
    The proto-JSON bytes of C{message}.

    With C{defaults} (the default) every field without presence is written
    even when it holds its default (C{"fips140":false}, C{"message":""}),
    as in the spec's VersionResponse example; unset message fields are
    left out either way.  kms-go accepts both forms but rejects unknown
    keys, which this never writes.
    """
    return json.dumps(to_dict(message, defaults), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def to_dict(message: Message, defaults: bool = False) -> dict[str, Any]:
    """
    The proto-JSON value of C{message} as Python data.  Without
    C{defaults} it is the form of the vectors: fields holding their default
    value are left out.
    """
    if message.DESCRIPTOR.full_name.startswith("google.protobuf."):
        return json_format.MessageToDict(message)
    out: dict[str, Any] = {}
    fields: Sequence[tuple[Any, Any]]
    if defaults:
        fields = [
            (f, getattr(message, f.name))
            for f in message.DESCRIPTOR.fields
            if not f.has_presence or message.HasField(f.name)
        ]
    else:
        fields = message.ListFields()
    for field, value in fields:
        out[field.json_name] = _field_value(field, value, defaults)
    return out


def from_json(data: str | bytes | bytearray | memoryview, cls: type[_M]) -> _M:
    """
    Parse proto-JSON bytes or text into a new C{cls} message.  Both the
    json_name and the proto field name are accepted; unknown keys are an
    error, as for kms-go.  Raises C{json_format.ParseError}, also for
    bytes that are not UTF-8.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise json_format.ParseError(f"not UTF-8: {e}") from None
    return json_format.Parse(data, cls(), ignore_unknown_fields=False)


def from_dict(value: dict[str, Any], cls: type[_M]) -> _M:
    """Build a C{cls} message from proto-JSON data (the inverse of L{to_dict})."""
    return json_format.ParseDict(value, cls(), ignore_unknown_fields=False)


def negotiate(accept: Accept) -> str:
    """
    C{"protobuf"} or C{"json"} for the C{Accept} header value(s) C{accept}:
    a str or bytes, a list of them (a header sent several times), or None.
    """
    listed = _media_types(accept)
    if PROTOBUF in listed and JSON not in listed:
        return "protobuf"
    return "json"


def _media_types(accept: Accept) -> set[str]:
    if accept is None:
        return set()
    values = [accept] if isinstance(accept, (str, bytes)) else list(accept)
    types = set()
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        for item in value.split(","):
            media, *params = (part.strip() for part in item.split(";"))
            if media and _quality(params) > 0:
                types.add(media.lower())
    return types


def _quality(params: Iterable[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 1.0
    return 1.0


def _field_value(field: FD, value: Any, defaults: bool) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {_map_key(key): _single(value_field, value[key], defaults) for key in sorted(value, key=_sort_key)}
    if field.is_repeated:
        return [_single(field, item, defaults) for item in value]
    return _single(field, value, defaults)


def _single(field: FD, value: Any, defaults: bool) -> Any:
    kind = field.type
    if kind == FD.TYPE_MESSAGE:
        if value.DESCRIPTOR.full_name.startswith("google.protobuf."):
            return json_format.MessageToDict(value)
        return to_dict(value, defaults)
    if kind in _INT64:
        return str(value)
    if kind == FD.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if kind in _FLOATS:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if kind == FD.TYPE_ENUM:
        assert field.enum_type is not None  # every enum field has its enum type
        known = field.enum_type.values_by_number.get(value)
        return known.name if known else value
    return value


def _map_key(key: object) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _sort_key(key: str | int) -> bytes | int:
    return key.encode("utf-8") if isinstance(key, str) else key
