"""
The three kinds of durable record and their plaintext encoding.

A record is what the Raft driver asks storage to keep: a log L{Entry}, the
L{HardState} (term, vote, commit) or a L{Snapshot} (L{SnapshotMeta} plus the
state machine's bytes).  This module turns one record into the plaintext
that L{minkms.storage.layout} seals into a frame, and back.  All integers
are big-endian.

    entry       01 | index u64 | term u64 | entry kind u8 | data ...
    hard state  02 | term u64 | has vote u8 (0/1) | vote u64 | commit u64
    snapshot    03 | index u64 | term u64 | config length u32 | config
                   | state machine bytes ...

The trailing C{data} and state-machine bytes run to the end of the
plaintext; their length comes from the frame.  Node 0 is a valid vote, so
"no vote" is the separate flag rather than a reserved ID.
"""

import struct

from minkms.raft.types import Entry, HardState, Snapshot, SnapshotMeta

KIND_ENTRY = 1
KIND_HARD_STATE = 2
KIND_SNAPSHOT = 3

_ENTRY = struct.Struct(">BQQB")
_HARD_STATE = struct.Struct(">BQBQQ")
_SNAPSHOT = struct.Struct(">BQQI")

_U64_MAX = 2**64 - 1

MAX_PLAINTEXT = 2**31 - 1024
"""The largest encoded record; a frame adds nonce and tag within a u32 length."""


Record = Entry | HardState | Snapshot
"""Anything L{encode_record} accepts."""


class RecordDecodeError(ValueError):
    """Authenticated plaintext that is not a record this version writes."""


def _check_u64(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise ValueError(f"{name} must be an unsigned 64-bit integer, not {value!r}")


def check_record(record: object) -> None:
    """
    Refuse, before anything is queued, a record that L{encode_record}
    could not encode, so a caller's mistake never reaches the disk path.

    @raise TypeError: not an L{Entry}, L{HardState} or L{Snapshot}.
    @raise ValueError: a field out of range.
    """
    if isinstance(record, Entry):
        _check_u64("entry index", record.index)
        _check_u64("entry term", record.term)
        if not 0 <= record.kind <= 255:
            raise ValueError(f"entry kind must fit a byte, not {record.kind}")
        if not isinstance(record.data, bytes):
            raise TypeError("entry data must be bytes")
        if _ENTRY.size + len(record.data) > MAX_PLAINTEXT:
            raise ValueError("entry is too large")
    elif isinstance(record, HardState):
        _check_u64("term", record.term)
        _check_u64("commit", record.commit)
        if record.vote is not None:
            _check_u64("vote", record.vote)
    elif isinstance(record, Snapshot):
        _check_u64("snapshot index", record.meta.index)
        _check_u64("snapshot term", record.meta.term)
        if not isinstance(record.meta.config, bytes) or not isinstance(record.data, bytes):
            raise TypeError("snapshot config and data must be bytes")
        if _SNAPSHOT.size + len(record.meta.config) + len(record.data) > MAX_PLAINTEXT:
            raise ValueError("snapshot is too large")
    else:
        raise TypeError(f"not a storage record: {type(record).__name__}")


def encode_record(record: Record) -> bytes:
    """The plaintext of one record (see the module docstring)."""
    head, body = encode_record_parts(record)
    return head + body if body else head


def encode_record_parts(record: Record) -> tuple[bytes, bytes]:
    """
    The plaintext of one record as its fixed fields and its variable body
    (entry data, snapshot bytes), not joined: a large snapshot is sealed
    in pieces without a second copy of it.
    """
    if isinstance(record, Entry):
        return _ENTRY.pack(KIND_ENTRY, record.index, record.term, record.kind), record.data
    if isinstance(record, HardState):
        has_vote = record.vote is not None
        fields = _HARD_STATE.pack(
            KIND_HARD_STATE,
            record.term,
            int(has_vote),
            record.vote if has_vote else 0,
            record.commit,
        )
        return fields, b""
    if isinstance(record, Snapshot):
        meta = record.meta
        head = _SNAPSHOT.pack(KIND_SNAPSHOT, meta.index, meta.term, len(meta.config)) + meta.config
        return head, record.data
    raise TypeError(f"not a storage record: {type(record).__name__}")


def record_size(record: Record) -> int:
    """The length of L{encode_record}'s result, without encoding."""
    if isinstance(record, Entry):
        return _ENTRY.size + len(record.data)
    if isinstance(record, HardState):
        return _HARD_STATE.size
    if isinstance(record, Snapshot):
        return _SNAPSHOT.size + len(record.meta.config) + len(record.data)
    raise TypeError(f"not a storage record: {type(record).__name__}")


def decode_record(plaintext: bytes) -> Record:
    """
    Reverse L{encode_record}.

    @raise RecordDecodeError: unknown kind or wrong length.
    """
    if not plaintext:
        raise RecordDecodeError("empty record")
    kind = plaintext[0]
    if kind == KIND_ENTRY:
        if len(plaintext) < _ENTRY.size:
            raise RecordDecodeError("short entry record")
        _, index, term, entry_kind = _ENTRY.unpack_from(plaintext)
        return Entry(index, term, entry_kind, plaintext[_ENTRY.size :])
    if kind == KIND_HARD_STATE:
        if len(plaintext) != _HARD_STATE.size:
            raise RecordDecodeError("hard state record of wrong length")
        _, term, has_vote, vote, commit = _HARD_STATE.unpack(plaintext)
        if has_vote not in (0, 1):
            raise RecordDecodeError("hard state vote flag is not 0 or 1")
        return HardState(term, vote if has_vote else None, commit)
    if kind == KIND_SNAPSHOT:
        if len(plaintext) < _SNAPSHOT.size:
            raise RecordDecodeError("short snapshot record")
        _, index, term, config_len = _SNAPSHOT.unpack_from(plaintext)
        config_end = _SNAPSHOT.size + config_len
        if config_end > len(plaintext):
            raise RecordDecodeError("snapshot config runs past the record")
        return Snapshot(
            SnapshotMeta(index, term, plaintext[_SNAPSHOT.size : config_end]),
            plaintext[config_end:],
        )
    raise RecordDecodeError(f"unknown record kind {kind}")
