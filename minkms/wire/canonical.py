"""
Deterministic protobuf bytes that equal what kms-go (protobuf-go) writes.

protobuf-go writes fields in field-number order, leaves proto3 defaults out,
packs repeated scalars and, in the vectors, writes map entries with keys
ascending.  upb's C{SerializeToString(deterministic=True)} does all of this
except one thing: it sorts integer map keys I{descending}.  Messages whose
type tree holds an integer-keyed map (ClusterStatusResponse,
ServerStatusResponse) are therefore encoded here field by field; all others
go through upb, which is much faster.

Unknown fields are dropped by the field-by-field path (the server only
encodes messages it built itself).
"""

import functools
import struct
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor as FD
from google.protobuf.message import Message

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

_UNSIGNED = {FD.TYPE_UINT32, FD.TYPE_UINT64}
_SIGNED = {FD.TYPE_INT32, FD.TYPE_INT64, FD.TYPE_ENUM}
_ZIGZAG = {FD.TYPE_SINT32: 32, FD.TYPE_SINT64: 64}
_FIXED = {
    FD.TYPE_FIXED32: ("<I", _I32),
    FD.TYPE_SFIXED32: ("<i", _I32),
    FD.TYPE_FLOAT: ("<f", _I32),
    FD.TYPE_FIXED64: ("<Q", _I64),
    FD.TYPE_SFIXED64: ("<q", _I64),
    FD.TYPE_DOUBLE: ("<d", _I64),
}
_INT_KEYS = (
    _UNSIGNED
    | _SIGNED
    | set(_ZIGZAG)
    | {
        FD.TYPE_FIXED32,
        FD.TYPE_SFIXED32,
        FD.TYPE_FIXED64,
        FD.TYPE_SFIXED64,
    }
)


def encode_message(message: Message) -> bytes:
    """
    The canonical bytes of C{message}: kms-go's field order, defaults left
    out, map entries in ascending key order.  Use this, never a bare
    C{SerializeToString()}, for anything that goes on the wire.
    """
    if needs_field_order(message.DESCRIPTOR):
        return encode_field_by_field(message)
    return message.SerializeToString(deterministic=True)


@functools.cache
def needs_field_order(descriptor: Descriptor) -> bool:
    """
    Whether upb would order some map of this message type (or of a nested
    one) differently from kms-go, i.e. whether an integer-keyed map occurs.
    """
    return _has_int_map(descriptor, set())


def _has_int_map(descriptor: Descriptor, seen: set[Descriptor]) -> bool:
    if descriptor in seen:
        return False
    seen.add(descriptor)
    for field in descriptor.fields:
        if field.message_type is None:
            continue
        if _is_map(field) and field.message_type.fields_by_name["key"].type in _INT_KEYS:
            return True
        if _has_int_map(field.message_type, seen):
            return True
    return False


def _is_map(field: FD) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def encode_field_by_field(message: Message) -> bytes:
    """
    C{message} encoded here, field by field in field-number order, with map
    entries in ascending key order: the path for types upb would order wrongly.
    """
    out = bytearray()
    for field, value in message.ListFields():
        if _is_map(field):
            _put_map(out, field, value)
        elif field.is_repeated:
            _put_repeated(out, field, value)
        else:
            _put_single(out, field, value)
    return bytes(out)


def _put_map(out: bytearray, field: FD, mapping: Any) -> None:
    entry = field.message_type
    assert entry is not None  # every map field has an entry type
    key_field = entry.fields_by_name["key"]
    value_field = entry.fields_by_name["value"]
    for key in sorted(mapping, key=_map_sort_key):
        body = bytearray()
        _put_single(body, key_field, key)
        _put_single(body, value_field, mapping[key])
        _put_len(out, field.number, body)


def _map_sort_key(key: str | int) -> bytes | int:
    return key.encode("utf-8") if isinstance(key, str) else key


def _put_repeated(out: bytearray, field: FD, values: Any) -> None:
    if field.type in (FD.TYPE_MESSAGE, FD.TYPE_STRING, FD.TYPE_BYTES) or not field.is_packed:
        for value in values:
            _put_single(out, field, value)
        return
    body = bytearray()
    for value in values:
        body += _scalar(field.type, value)
    _put_len(out, field.number, body)


def _put_single(out: bytearray, field: FD, value: Any) -> None:
    kind = field.type
    if kind == FD.TYPE_MESSAGE:
        _put_len(out, field.number, encode_message(value))
    elif kind == FD.TYPE_STRING:
        _put_len(out, field.number, value.encode("utf-8"))
    elif kind == FD.TYPE_BYTES:
        _put_len(out, field.number, value)
    else:
        out += _varint(field.number << 3 | _wire_type(kind))
        out += _scalar(kind, value)


def _put_len(out: bytearray, number: int, payload: bytes | bytearray) -> None:
    out += _varint(number << 3 | _LEN)
    out += _varint(len(payload))
    out += payload


def _wire_type(kind: int) -> int:
    return _FIXED[kind][1] if kind in _FIXED else _VARINT


def _scalar(kind: int, value: Any) -> bytes:
    if kind == FD.TYPE_BOOL:
        return b"\x01" if value else b"\x00"
    if kind in _UNSIGNED:
        return _varint(value)
    if kind in _SIGNED:
        return _varint(value & 0xFFFFFFFFFFFFFFFF)
    if kind in _ZIGZAG:
        bits = _ZIGZAG[kind]
        return _varint(((value << 1) ^ (value >> (bits - 1))) & ((1 << bits) - 1))
    if kind in _FIXED:
        return struct.pack(_FIXED[kind][0], value)
    raise TypeError(f"unsupported protobuf field type {kind}")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
