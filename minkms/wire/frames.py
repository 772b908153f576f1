"""
Command frames of C{/v1/kms} (spec sections 4.2 to 4.4).

A body is frames back to back, each C{[u16 BE code][u32 BE length][protobuf]},
with no header, count or terminator.  This module turns bodies into
(command, message) pairs and back, for both sides:

  - the server decodes requests strictly (L{decode_request}) and encodes
    responses (L{encode_response});
  - our client encodes requests (L{encode_request}) and decodes responses
    the way kms-go does (L{decode_response}).

Server rules chosen here (the spec leaves them open):

  - one body carries one command code; mixing codes is refused (400);
  - a command kms-go never batches (writes, CLUSTER:STATUS, the LIST
    commands) must come as exactly one frame (400 otherwise): kms-go never
    sends multi-frame writes, and refusing them avoids half-applied batches;
  - at most L{MAX_FRAMES} frames per body (400 beyond): kms-go sends one
    frame per item the application passes, and MinIO passes a handful.
"""

import struct
from collections.abc import Iterable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from minkms.errors import KMSError
from minkms.wire import kms_pb2 as pb
from minkms.wire.canonical import encode_message
from minkms.wire.commands import BY_CODE, Command

MAX_FRAMES = 1000
HEADER = struct.Struct(">HI")
_MAX_LENGTH = 0xFFFFFFFF
_M = TypeVar("_M", bound=Message)


class FrameError(ValueError):
    """
    A response body our client cannot use: what kms-go reports as a client
    side decoding error (never an HTTP status of the server).
    """


def decode_request(body: bytes, max_frames: int = MAX_FRAMES) -> list[tuple[Command, Message]]:
    """
    Split a request body into (command, request message) pairs, in order.

    Raises L{KMSError} 400 with a message naming the problem for: an empty
    body, a truncated header or payload, an unknown code, a second code, a
    second frame of a command that is not batched, more than C{max_frames}
    frames, or a payload that is not the command's protobuf message.
    """
    if not body:
        raise KMSError(400, "empty request body: expected at least one command frame")
    if len(body) >= HEADER.size:
        code, length = HEADER.unpack_from(body)
        if length == len(body) - HEADER.size and max_frames >= 1:
            # One frame, the body exactly: almost every request.
            only = _known(code)
            return [(only, _parse(only.request, body[HEADER.size :], only.name, 1))]
    view = memoryview(body)
    command: Command | None = None
    result: list[tuple[Command, Message]] = []
    offset = 0
    while offset < len(body):
        index = len(result) + 1
        code, payload, offset = _split_frame(view, offset, index, "command frame")
        this = _known(code)
        if command is None:
            command = this
        elif this is not command:
            raise KMSError(
                400,
                f"mixed commands in one request: frame {index} is {this.name}, frame 1 is {command.name}",
            )
        elif not command.batch:
            raise KMSError(400, f"{command.name} takes exactly one command frame, not a batch")
        if index > max_frames:
            raise KMSError(400, f"too many command frames: at most {max_frames} per request")
        result.append((command, _parse(command.request, payload, command.name, index)))
    return result


def encode_request(code: int, messages: Iterable[Message]) -> bytes:
    """
    The body our client sends for one call: one frame per message, all with
    C{code}.  Refuses (ValueError/TypeError) what kms-go never sends: no
    message, several messages for a command that is not batched, or a
    message of the wrong type.
    """
    command = _command(code)
    messages = list(messages)
    if not messages:
        raise ValueError(f"{command.name}: no request message to send")
    if len(messages) > 1 and not command.batch:
        raise ValueError(f"{command.name} is not batched: got {len(messages)} messages")
    for message in messages:
        _check_type(message, command.request, command.name)
    return b"".join(_frame(code, encode_message(m)) for m in messages)


def encode_response(code: int, messages: Iterable[Message | None]) -> bytes:
    """
    The success body for C{code}: one frame per item, in order.  An item
    C{None} becomes the zero-length frame C{[code][00 00 00 00]}, the
    recommended reply per write command (spec 4.4); other items must be the
    command's response message type.
    """
    command = _command(code)
    out = []
    for message in messages:
        if message is None:
            out.append(zero_frame(code))
            continue
        if command.response is None:
            raise TypeError(f"{command.name} has no response message; pass None")
        _check_type(message, command.response, command.name)
        out.append(_frame(code, encode_message(message)))
    return b"".join(out)


def zero_frame(code: int) -> bytes:
    """The zero-length frame of C{code}: a write command's success reply."""
    return HEADER.pack(code, 0)


def decode_response(code: int, body: bytes, expect: int | None = None) -> list[Message]:
    """
    Decode a 200 response body of command C{code} as kms-go does.

    Write commands: kms-go never reads the body, so it is ignored and the
    result is C{[]}.  Every frame must carry C{code}; a trailing partial
    frame is an error; a LIST response is exactly one frame with nothing
    after it.  With C{expect}, the number of frames must match too.

    Raises L{FrameError}.
    """
    command = _command(code)
    if command.response is None:
        return []
    view = memoryview(body)
    messages: list[Message] = []
    offset = 0
    while offset < len(body):
        if messages and _is_list(command):
            raise FrameError(f"{command.name}: response body contains additional data")
        index = len(messages) + 1
        try:
            got, payload, offset = _split_frame(view, offset, index, "response frame")
        except KMSError as e:
            raise FrameError(f"{command.name}: {e.message}") from None
        if got != code:
            raise FrameError(f"received command {_name(got)}, expected {command.name}")
        try:
            messages.append(_parse(command.response, payload, command.name, index))
        except KMSError as e:
            raise FrameError(e.message) from None
    if _is_list(command) and not messages:
        raise FrameError(f"{command.name}: empty response body")
    if expect is not None and len(messages) != expect:
        raise FrameError(f"{command.name}: expected {expect} response frames, got {len(messages)}")
    return messages


def decode_message(cls: type[_M], data: bytes) -> _M:
    """
    Parse a plain (unframed) protobuf body such as a LogRequest; a malformed
    one is the caller's fault (L{KMSError} 400).
    """
    try:
        return cls.FromString(bytes(data))
    except DecodeError:
        raise KMSError(400, f"invalid {cls.DESCRIPTOR.name}: malformed protobuf") from None


def _split_frame(view: memoryview, offset: int, index: int, what: str) -> tuple[int, memoryview, int]:
    left = len(view) - offset
    if left < HEADER.size:
        raise KMSError(
            400,
            f"truncated {what} {index}: {left} bytes left, a frame header needs {HEADER.size}",
        )
    code, length = HEADER.unpack_from(view, offset)
    start = offset + HEADER.size
    if length > len(view) - start:
        raise KMSError(
            400,
            f"truncated {what} {index}: length {length} exceeds the {len(view) - start} bytes left in the body",
        )
    return code, view[start : start + length], start + length


def _parse(cls: type[_M], payload: memoryview | bytes, name: str, index: int) -> _M:
    try:
        return cls.FromString(bytes(payload))
    except DecodeError:
        raise KMSError(
            400,
            f"invalid {name} message in frame {index}: not a valid {cls.DESCRIPTOR.name}",
        ) from None


def _known(code: int) -> Command:
    command = BY_CODE.get(code)
    if command is None:
        raise KMSError(400, f"unknown command code {code}")
    return command


def _command(code: int) -> Command:
    command = BY_CODE.get(code)
    if command is None:
        raise ValueError(f"unknown command code {code}")
    return command


def _name(code: int) -> str:
    command = BY_CODE.get(code)
    return command.name if command else f"!INVALID:{code}"


def _is_list(command: Command) -> bool:
    return command.request is pb.ListRequest


def _check_type(message: Message, cls: type[Message], name: str) -> None:
    if type(message) is cls:
        return
    if message.DESCRIPTOR.full_name != cls.DESCRIPTOR.full_name:
        raise TypeError(f"{name} takes {cls.DESCRIPTOR.name}, not {message.DESCRIPTOR.name}")


def _frame(code: int, payload: bytes) -> bytes:
    if len(payload) > _MAX_LENGTH:
        raise ValueError(f"message of {len(payload)} bytes does not fit a frame")
    return HEADER.pack(code, len(payload)) + payload
