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

The core keeps batches small: an Append of several entries, and every other
message, stays under L{MAX_MESSAGE_BYTES} (bounded with L{append_size}), so
it fits one AMP value of at most 65,535 bytes.  Only an Append of a single
entry larger than that (a restored backup) exceeds it; the peer channel
splits any message over several AMP values.
"""

import struct
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

_SCHEMAS: dict[type[Message], tuple[int, tuple[tuple[str, str], ...]]] = {
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
_BY_KIND = {kind: (cls, fields) for cls, (kind, fields) in _SCHEMAS.items()}

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


def encode(message: Message) -> bytes:
    """The bytes of C{message}."""
    kind, fields = _SCHEMAS[type(message)]
    parts = [_HEADER.pack(kind, message.src, message.dst, message.term)]
    for name, field_kind in fields:
        parts.append(_encode_field(field_kind, getattr(message, name)))
    return b"".join(parts)


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


def decode(data: bytes) -> Message:
    """
    The message encoded in C{data}.

    @raise CodecError: unless C{data} is exactly one well-formed message.
    """
    reader = _Reader(bytes(data))
    kind, src, dst, term = reader.unpack(_HEADER)
    if kind not in _BY_KIND:
        raise CodecError(f"unknown Raft message kind {kind}")
    cls, fields = _BY_KIND[kind]
    values = {name: reader.field(field_kind) for name, field_kind in fields}
    reader.finish()
    return cls(src=src, dst=dst, term=term, **values)
