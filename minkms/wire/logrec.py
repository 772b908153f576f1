"""
Records of the C{POST /v1/debug/log} stream (spec sections 9 and 11).

Each record is C{[u32 BE length L][protobuf LogRecord]} with L at most
4096: kms-go reads into a 4 KiB buffer and drops the whole stream on a
larger record, so L{encode_log_record} shortens records to fit.  It also
writes the legacy field 5 (C{Request}, with a parseable IP) that kms-go
clients from before June 2025 (MinIO's pinned one) dereference without
checking.
"""

import datetime
import struct
from collections.abc import Iterable

from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

from minkms.wire import kms_pb2 as pb
from minkms.wire.frames import FrameError

MAX_RECORD = 4096
LEGACY_IP = "127.0.0.1"
_PREFIX = struct.Struct(">I")
_MESSAGE_TAG = 1


def encode_log_record(
    level: int,
    time: datetime.datetime | timestamp_pb2.Timestamp | float,
    message: str,
    trace: Iterable[pb.LogRecord.StackFrame | tuple[str, str, int]] = (),
    *,
    legacy: bool = True,
    ip: str = LEGACY_IP,
) -> bytes:
    """
    One length-prefixed record, never longer than 4 + L{MAX_RECORD} bytes.

    C{time} is an aware or UTC-naive C{datetime}, a C{Timestamp}, or Unix
    seconds.  C{trace} holds C{StackFrame}s or C{(function, file, line)}
    tuples, innermost first.  When the record is too long, trace frames are
    dropped from the outer end first, then the message is cut (on a UTF-8
    character boundary).  With C{legacy} (default) field 5 carries C{ip};
    method, path and identity stay empty.
    """
    record = pb.LogRecord(Level=level, Message=message)
    record.Time.CopyFrom(_timestamp(time))
    for frame in trace:
        if isinstance(frame, pb.LogRecord.StackFrame):
            record.Trace.add().CopyFrom(frame)
        else:
            function, file, line = frame
            record.Trace.add(Function=function, File=file, Line=line)
    if legacy:
        record.Request.IP = ip
    data = record.SerializeToString(deterministic=True)
    while len(data) > MAX_RECORD and len(record.Trace):
        del record.Trace[-1]
        data = record.SerializeToString(deterministic=True)
    if len(data) > MAX_RECORD:
        record.Message = _shorten(record, message)
        data = record.SerializeToString(deterministic=True)
    if len(data) > MAX_RECORD:
        raise ValueError(f"log record of {len(data)} bytes cannot be cut to {MAX_RECORD}")
    return _PREFIX.pack(len(data)) + data


def decode_log_records(buffer: bytes) -> tuple[list[pb.LogRecord], bytes]:
    """
    Split stream bytes into complete LogRecords and the unfinished rest, for
    our client.  A record longer than L{MAX_RECORD} is an error, as in
    kms-go (L{FrameError}).
    """
    view = memoryview(buffer)
    records = []
    offset = 0
    while len(view) - offset >= _PREFIX.size:
        (length,) = _PREFIX.unpack_from(view, offset)
        if length > MAX_RECORD:
            raise FrameError(f"log record too large: {length} bytes")
        end = offset + _PREFIX.size + length
        if end > len(view):
            break
        try:
            records.append(pb.LogRecord.FromString(bytes(view[offset + _PREFIX.size : end])))
        except DecodeError as e:
            raise FrameError(f"invalid log record: {e}") from None
        offset = end
    return records, bytes(view[offset:])


def _shorten(record: pb.LogRecord, message: str) -> str:
    record.Message = ""
    budget = MAX_RECORD - len(record.SerializeToString(deterministic=True))
    size = budget - _MESSAGE_TAG - 1
    while size > 0 and _MESSAGE_TAG + _varint_size(size) + size > budget:
        size -= 1
    if size <= 0:
        return ""
    return message.encode("utf-8")[:size].decode("utf-8", errors="ignore")


def _varint_size(value: int) -> int:
    size = 1
    while value > 0x7F:
        value >>= 7
        size += 1
    return size


def _timestamp(time: datetime.datetime | timestamp_pb2.Timestamp | float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    if isinstance(time, timestamp_pb2.Timestamp):
        stamp.CopyFrom(time)
    elif isinstance(time, datetime.datetime):
        stamp.FromDatetime(time)
    else:
        stamp.FromNanoseconds(round(time * 1_000_000_000))
    return stamp
