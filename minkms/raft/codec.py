"""
A compact, deterministic binary encoding of the Raft messages.

Layout (big-endian): one kind byte, then C{src} and C{dst} as signed 64-bit
integers, C{term} as unsigned 64-bit, then the fields of the message kind in
declaration order: integers as 8 bytes, booleans as one byte (0 or 1), byte
strings as a 4-byte length and the bytes, an entry list as a 4-byte count
and per entry index (8), term (8), kind (1), data (4 + n), and a snapshot
meta as index (8), term (8), config (4 + n).  Equal messages encode to equal
bytes; L{decode} rejects anything that is not exactly one well-formed
message.

Every message crosses the peer channel, so the kinds a write sends (every
kind of fixed size, and L{Append}) have an encoder and a decoder of their
own, with their C{struct} layouts worked out once.  They give the same bytes
as the field-by-field code, which defines the layout and, when a fast
decoder meets anything it does not take, reads the bytes again to name the
error.

The core keeps batches small: an Append of several entries, and every other
message, stays under L{MAX_MESSAGE_BYTES} (bounded with L{append_size}), so
it fits one AMP value of at most 65,535 bytes.  Only an Append of a single
entry larger than that (a restored backup) exceeds it; the peer channel
splits any message over several AMP values.
"""

import operator
import struct
from collections.abc import Callable
from typing import Any

from minkms.raft.messages import (
    Append,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from minkms.raft.types import Entry, SnapshotMeta

MAX_MESSAGE_BYTES = 60_000
"""The largest encoded message the core produces, but for a single large entry."""

HEADER_BYTES = 1 + 8 + 8 + 8
ENTRY_OVERHEAD = 8 + 8 + 1 + 4
APPEND_OVERHEAD = HEADER_BYTES + 8 + 8 + 8 + 4 + 8 + 1
SNAPSHOT_OVERHEAD = HEADER_BYTES + (8 + 8 + 4) + 8 + 4 + 1


class CodecError(ValueError):
    """Bytes that are not one well-formed Raft message."""


_UINT = "uint"
_BOOL = "bool"
_BYTES = "bytes"
_ENTRIES = "entries"
_META = "meta"

SCHEMAS: dict[type[Message], tuple[int, tuple[tuple[str, str], ...]]] = {
    VoteRequest: (
        1,
        (("last_index", _UINT), ("last_term", _UINT), ("pre", _BOOL), ("transfer", _BOOL)),
    ),
    VoteResponse: (2, (("pre", _BOOL), ("granted", _BOOL))),
    Append: (
        3,
        (
            ("prev_index", _UINT),
            ("prev_term", _UINT),
            ("commit", _UINT),
            ("entries", _ENTRIES),
            ("acked", _UINT),
            ("notice", _BOOL),
        ),
    ),
    AppendResponse: (
        4,
        (
            ("index", _UINT),
            ("reject", _BOOL),
            ("hint_index", _UINT),
            ("hint_term", _UINT),
        ),
    ),
    Heartbeat: (
        5,
        (
            ("commit", _UINT),
            ("context", _UINT),
            ("lease_grant", _UINT),
            ("lease_index", _UINT),
            ("lease_us", _UINT),
            ("acked", _UINT),
        ),
    ),
    HeartbeatResponse: (6, (("context", _UINT), ("lease_request", _UINT))),
    InstallSnapshot: (
        7,
        (("meta", _META), ("offset", _UINT), ("data", _BYTES), ("done", _BOOL)),
    ),
    SnapshotResponse: (8, (("index", _UINT), ("next_offset", _UINT))),
    TimeoutNow: (9, ()),
    ReadIndexRequest: (10, (("request_id", _BYTES),)),
    ReadIndexResponse: (11, (("request_id", _BYTES), ("index", _UINT))),
}
"""Each message kind's number and fields in wire order: the layout the codec defines."""
_BY_KIND = {kind: (cls, fields) for cls, (kind, fields) in SCHEMAS.items()}

_HEADER = struct.Struct(">BqqQ")
_Q = struct.Struct(">Q")
_I = struct.Struct(">I")
_ENTRY_HEAD = struct.Struct(">QQBI")
_META_HEAD = struct.Struct(">QQ")


def append_size(entries_bytes: int, entry_count: int) -> int:
    """The encoded size of an L{Append} carrying that much entry data."""
    return APPEND_OVERHEAD + entry_count * ENTRY_OVERHEAD + entries_bytes


def _bytes_field(value: bytes) -> bytes:
    return _I.pack(len(value)) + value


def _encode_field(kind: str, value: Any) -> bytes:
    if kind == _UINT:
        return _Q.pack(value)
    if kind == _BOOL:
        return b"\x01" if value else b"\x00"
    if kind == _BYTES:
        return _bytes_field(value)
    if kind == _ENTRIES:
        parts = [_I.pack(len(value))]
        for entry in value:
            parts.append(_ENTRY_HEAD.pack(entry.index, entry.term, entry.kind, len(entry.data)))
            parts.append(entry.data)
        return b"".join(parts)
    if kind == _META:
        return _META_HEAD.pack(value.index, value.term) + _bytes_field(value.config)
    raise AssertionError(kind)


def encode_by_schema(message: Message) -> bytes:
    """C{message}'s bytes, field by field: the definition of the layout, used for the rare kinds."""
    kind, fields = SCHEMAS[type(message)]
    parts = [_HEADER.pack(kind, message.src, message.dst, message.term)]
    for name, field_kind in fields:
        parts.append(_encode_field(field_kind, getattr(message, name)))
    return b"".join(parts)


def encode(message: Message) -> bytes:
    """The bytes of C{message}."""
    return _ENCODERS[type(message)](message)


class _Reader:
    """Reads fields off a byte string, failing with L{CodecError} on truncation."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise CodecError("truncated Raft message")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        return layout.unpack(self._take(layout.size))

    def bytes(self) -> bytes:
        (size,) = self.unpack(_I)
        return self._take(size)

    def field(self, kind: str) -> object:
        if kind == _UINT:
            return self.unpack(_Q)[0]
        if kind == _BOOL:
            flag = self._take(1)[0]
            if flag > 1:
                raise CodecError("malformed boolean in Raft message")
            return flag == 1
        if kind == _BYTES:
            return self.bytes()
        if kind == _ENTRIES:
            (count,) = self.unpack(_I)
            entries = []
            for _ in range(count):
                index, term, entry_kind, size = self.unpack(_ENTRY_HEAD)
                entries.append(Entry(index, term, entry_kind, self._take(size)))
            return tuple(entries)
        if kind == _META:
            index, term = self.unpack(_META_HEAD)
            return SnapshotMeta(index, term, self.bytes())
        raise AssertionError(kind)

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise CodecError("trailing bytes after Raft message")


def decode_by_schema(data: bytes) -> Message:
    """
    The message in C{data}, read field by field: the definition of what is
    well-formed, and of the error that says why something is not.
    """
    reader = _Reader(data)
    kind, src, dst, term = reader.unpack(_HEADER)
    if kind not in _BY_KIND:
        raise CodecError(f"unknown Raft message kind {kind}")
    cls, fields = _BY_KIND[kind]
    values = {name: reader.field(field_kind) for name, field_kind in fields}
    reader.finish()
    return cls(src=src, dst=dst, term=term, **values)


class _Malformed(Exception):
    """A fast decoder met something it does not take: the schema reader says what."""


_Encoder = Callable[[Any], bytes]
_Decoder = Callable[[bytes], Message]


def _fixed_size_codec(kind: int, cls: type[Message], fields: tuple[tuple[str, str], ...]) -> tuple[_Encoder, _Decoder]:
    """
    An encoder and a decoder for a kind whose fields are all integers and
    booleans: one C{struct} layout for the whole message, worked out once.
    """
    codes = "".join("Q" if field_kind == _UINT else "B" for _, field_kind in fields)
    pack = struct.Struct(_HEADER.format + codes.replace("B", "?")).pack
    body = struct.Struct(">" + _HEADER.format[2:] + codes)
    unpack_from, size = body.unpack_from, 1 + body.size
    values_of = operator.attrgetter("src", "dst", "term", *(name for name, _ in fields))
    flags = tuple(3 + i for i, (_, field_kind) in enumerate(fields) if field_kind == _BOOL)

    def encode_fixed(message: Any) -> bytes:
        return pack(kind, *values_of(message))

    def decode_fixed(data: bytes) -> Message:
        if len(data) != size:
            raise _Malformed()
        values = unpack_from(data, 1)
        if flags:
            checked = list(values)
            for i in flags:
                if checked[i] > 1:
                    raise _Malformed()
                checked[i] = checked[i] == 1
            return cls(*checked)
        return cls(*values)

    return encode_fixed, decode_fixed


_APPEND_KIND = SCHEMAS[Append][0]
_APPEND_HEAD = struct.Struct(">BqqQQQQI")
_APPEND_TAIL = struct.Struct(">Q?")
_APPEND_TAIL_READ = struct.Struct(">QB")
_ENTRY_HEAD_SIZE = _ENTRY_HEAD.size


def _encode_append(message: Append) -> bytes:
    """L{encode_by_schema} for an L{Append}, without a call per field."""
    entries = message.entries
    parts = [
        _APPEND_HEAD.pack(
            _APPEND_KIND,
            message.src,
            message.dst,
            message.term,
            message.prev_index,
            message.prev_term,
            message.commit,
            len(entries),
        )
    ]
    pack_entry = _ENTRY_HEAD.pack
    for entry in entries:
        data = entry.data
        parts.append(pack_entry(entry.index, entry.term, entry.kind, len(data)))
        parts.append(data)
    parts.append(_APPEND_TAIL.pack(message.acked, message.notice))
    return b"".join(parts)


def _decode_append(data: bytes) -> Message:
    """L{decode_by_schema} for a well-formed L{Append}; L{_Malformed} or C{struct.error} for anything else."""
    _, src, dst, term, prev_index, prev_term, commit, count = _APPEND_HEAD.unpack_from(data)
    pos = _APPEND_HEAD.size
    end_of_data = len(data)
    entries = []
    unpack_entry = _ENTRY_HEAD.unpack_from
    for _ in range(count):
        index, entry_term, entry_kind, size = unpack_entry(data, pos)
        pos += _ENTRY_HEAD_SIZE
        end = pos + size
        if end > end_of_data:
            raise _Malformed()
        entries.append(Entry(index, entry_term, entry_kind, data[pos:end]))
        pos = end
    acked, notice = _APPEND_TAIL_READ.unpack_from(data, pos)
    if pos + _APPEND_TAIL_READ.size != end_of_data or notice > 1:
        raise _Malformed()
    return Append(src, dst, term, prev_index, prev_term, commit, tuple(entries), acked, notice == 1)


def _variable_fields(fields: tuple[tuple[str, str], ...]) -> bool:
    return any(field_kind not in (_UINT, _BOOL) for _, field_kind in fields)


_ENCODERS: dict[type[Message], _Encoder] = {cls: encode_by_schema for cls in SCHEMAS}
_DECODERS: dict[int, _Decoder] = {}
for _cls, (_kind, _fields) in SCHEMAS.items():
    if not _variable_fields(_fields):
        _ENCODERS[_cls], _DECODERS[_kind] = _fixed_size_codec(_kind, _cls, _fields)
_ENCODERS[Append] = _encode_append
_DECODERS[_APPEND_KIND] = _decode_append


def decode(data: bytes) -> Message:
    """
    The message encoded in C{data}.

    @raise CodecError: unless C{data} is exactly one well-formed message.
    """
    if type(data) is not bytes:
        data = bytes(data)
    if data:
        decoder = _DECODERS.get(data[0])
        if decoder is not None:
            try:
                return decoder(data)
            except (struct.error, _Malformed):
                pass
    return decode_by_schema(data)
