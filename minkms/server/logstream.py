"""
The server's log: one line per event on stderr (text or JSON), and the
C{POST /v1/debug/log} stream of spec section 9.

L{LogBuffer} observes Twisted's log, keeps the latest records in a ring
for C{Since} replays, and pushes new ones to the open streams.  With
C{?audit} the same endpoint streams the audit trail instead (one JSON
record per C{LogRecord} message): kms-go has no audit API, our
C{minkms logs --audit} uses it.
"""

import collections
import datetime
import json
import sys
import time

from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from twisted.python.threadable import isInIOThread
from twisted.web import server

from minkms.errors import ErrPermission, KMSError, bad_request, not_found
from minkms.server.api import SysAdminResource, query_flags
from minkms.server.http import caller_identity, send_error
from minkms.wire.logrec import encode_log_record

SLOG_LEVELS = {
    LogLevel.debug: -4,
    LogLevel.info: 0,
    LogLevel.warn: 4,
    LogLevel.error: 8,
    LogLevel.critical: 12,
}
LEVEL_NAMES = {-4: "DEBUG", 0: "INFO", 4: "WARN", 8: "ERROR", 12: "CRITICAL"}
RING_SIZE = 2000
GO_ZERO_SECONDS = -62135596800


class Record:
    """One log event as the stream carries it."""

    __slots__ = ("level", "time", "message", "trace")

    def __init__(self, level: int, time: float, message: str, trace: tuple) -> None:
        self.level = level
        self.time = time
        self.message = message
        self.trace = trace


def record_of(event: dict) -> Record:
    """A Twisted log event as a L{Record}: one line of text, slog level, trace."""
    level = SLOG_LEVELS.get(event.get("log_level"), 0)
    text = formatEvent(event)
    failure = event.get("log_failure")
    trace: tuple = ()
    if failure is not None:
        text = f"{text}: {failure.getErrorMessage()}"
        trace = tuple((name, file, line) for name, file, line, _, _ in reversed(failure.frames))
    if not trace:
        trace = ((event.get("log_namespace") or "", "", 0),)
    return Record(level, event.get("log_time") or time.time(), " ".join(text.split()), trace)


def format_line(record: Record, as_json: bool, namespace: str = "") -> str:
    """One log line: text C{TIME LEVEL message} or a JSON object."""
    stamp = datetime.datetime.fromtimestamp(record.time, datetime.timezone.utc)
    stamp_text = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    level = LEVEL_NAMES.get(record.level, str(record.level))
    if as_json:
        return json.dumps({"time": stamp_text, "level": level, "namespace": namespace, "message": record.message})
    return f"{stamp_text} {level} {record.message}"


def start_logging(stream=sys.stderr, level=LogLevel.info, as_json: bool = False) -> None:
    """Send Twisted log events at C{level} or above to C{stream}, one line each."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    observer = FilteringLogObserver(line_observer(stream, as_json), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def line_observer(stream, as_json: bool = False):
    """A log observer that writes one line per event (C{--log-format})."""

    def observe(event):
        stream.write(format_line(record_of(event), as_json, event.get("log_namespace") or "") + "\n")
        stream.flush()

    return observe


class LogBuffer:
    """A Twisted log observer keeping a ring of recent records for streams."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self.recent: collections.deque = collections.deque(maxlen=size)
        self.subscribers: set = set()

    def __call__(self, event: dict) -> None:
        record = record_of(event)
        if isInIOThread():
            self._publish(record)
        else:
            from twisted.internet import reactor

            reactor.callFromThread(self._publish, record)

    def _publish(self, record: Record) -> None:
        self.recent.append(record)
        for subscriber in list(self.subscribers):
            try:
                subscriber(record)
            except Exception:
                self.subscribers.discard(subscriber)


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data):
            raise bad_request("invalid LogRequest: truncated")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


class LogFilter:
    """What a C{LogRequest} asks for (spec 5.7, with section 11's older layout)."""

    def __init__(self, level=0, message="", since=None, trace_level=0) -> None:
        self.level = level
        self.message = message
        self.since = since
        self.trace_level = trace_level

    @classmethod
    def parse(cls, body: bytes, now: float) -> "LogFilter":
        """
        Read a LogRequest by hand: field 4 is C{TraceLevel} when a varint
        (current clients) and a method filter when a string (older ones,
        whose C{TraceLevel} is field 8).  The older string filters (method,
        path, identity, IP) match request records, which this stream does
        not carry, so they are ignored.
        """
        found = cls()
        offset = 0
        while offset < len(body):
            key, offset = _varint(body, offset)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, offset = _varint(body, offset)
                if number == 1:
                    found.level = _zigzag(value)
                elif number in (4, 8):
                    found.trace_level = _zigzag(value)
            elif wire == 2:
                length, offset = _varint(body, offset)
                value = body[offset : offset + length]
                if len(value) != length:
                    raise bad_request("invalid LogRequest: truncated")
                offset += length
                if number == 2:
                    found.message = value.decode("utf-8", "replace")
                elif number == 3:
                    found.since = _since(value, now)
            elif wire == 5:
                offset += 4
            elif wire == 1:
                offset += 8
            else:
                raise bad_request("invalid LogRequest: unsupported wire type")
        return found

    def matches(self, record: Record) -> bool:
        """Whether the stream shows C{record}."""
        return record.level >= self.level and self.message in record.message

    def encode(self, record: Record) -> bytes:
        """C{record} as a length-prefixed LogRecord, trace only if asked for."""
        trace = record.trace if record.level >= self.trace_level else ()
        return encode_log_record(record.level, record.time, record.message, trace)


def _since(data: bytes, now: float):
    try:
        stamp = timestamp_pb2.Timestamp.FromString(data)
    except DecodeError:
        raise bad_request("invalid LogRequest: bad Since timestamp") from None
    if stamp.seconds <= GO_ZERO_SECONDS:
        return None
    seconds = stamp.seconds + stamp.nanos / 1e9
    return None if seconds > now else seconds


class LogResource(SysAdminResource):
    """
    C{POST /v1/debug/log} (SysAdmin): an endless stream of records; with
    C{?audit}, of audit records.
    """

    isLeaf = True
    exact = True

    def __init__(self, buffer: LogBuffer, sysadmin: str, audit=None, clock=time) -> None:
        super().__init__()
        self._buffer = buffer
        self._sysadmin = sysadmin
        self._audit = audit
        self._clock = clock

    def render_POST(self, request):
        try:
            caller = caller_identity(request)
            if not caller or caller != self._sysadmin:
                raise ErrPermission
            wanted = LogFilter.parse(request.content.read(), self._clock.time())
            audit = b"audit" in query_flags(request)
            if audit and self._audit is None:
                raise not_found("the audit trail is not enabled on this node (config.yaml audit.file)")
        except KMSError as e:
            return send_error(request, e)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/octet-stream")
        if audit:
            self._stream_audit(request, wanted)
        else:
            self._stream_log(request, wanted)
        return server.NOT_DONE_YET

    def _stream_log(self, request, wanted: LogFilter) -> None:
        def send(record):
            if wanted.matches(record):
                request.write(wanted.encode(record))

        if wanted.since is not None:
            for record in list(self._buffer.recent):
                if record.time >= wanted.since:
                    send(record)
        request.write(b"")
        self._subscribe(request, self._buffer.subscribers, send)

    def _stream_audit(self, request, wanted: LogFilter) -> None:
        def send(lines):
            for line in lines:
                text = line.decode("utf-8").rstrip("\n")
                if wanted.message in text:
                    request.write(encode_log_record(0, self._clock.time(), text))

        request.write(b"")
        self._subscribe(request, self._audit.subscribers, send)

    def _subscribe(self, request, subscribers: set, send) -> None:
        subscribers.add(send)
        request.notifyFinish().addBoth(lambda _: subscribers.discard(send))
