"""
Error bodies of spec section 7.1, for both sides.

The server sends L{error_body}; our client reads any error reply with
L{parse_error}, which copies kms-go's rules exactly so that our client sees
the same (status, message) pair kms-go would.
"""

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from minkms.errors import KMSError
from minkms.wire import jsonfmt, kms_pb2 as pb
from minkms.wire.canonical import encode_message

MAX_ERROR_BODY = 5000


def error_body(error: KMSError, accept: jsonfmt.Accept = None) -> tuple[bytes, bytes]:
    """
    The (Content-Type, body) of the reply for C{error}, both as bytes ready
    for the HTTP layer.

    JSON C{{"message":"..."}} (the spec's recommendation) unless the
    C{Accept} header asks for protobuf only, by the rule of
    L{jsonfmt.negotiate}; then the binary ErrResponse, typed
    C{application/octet-stream}.  kms-go's C{Accept: application/*}
    therefore gets JSON.
    """
    message = pb.ErrResponse(Message=error.message)
    if jsonfmt.negotiate(accept) == "protobuf":
        return jsonfmt.PROTOBUF.encode("ascii"), encode_message(message)
    return jsonfmt.JSON.encode("ascii"), jsonfmt.to_json(message)


def parse_error(status: int, content_type: str | bytes | None, body: bytes) -> KMSError:
    """
    The error a kms-go client reports for a non-200 reply: only the first
    5000 bytes count; the Content-Type (str, bytes or None) is compared
    exactly (no parameters, no case folding); JSON or protobuf ErrResponse
    give their message, or the parser's error text if they do not parse;
    any other type gives the raw body as text, trailing newline included.
    """
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    body = bytes(body[:MAX_ERROR_BODY])
    if content_type == jsonfmt.JSON:
        try:
            return KMSError(status, jsonfmt.from_json(body, pb.ErrResponse).Message)
        except (json_format.ParseError, ValueError) as e:
            return KMSError(status, f"invalid JSON error body: {e}")
    if content_type == jsonfmt.PROTOBUF:
        try:
            return KMSError(status, pb.ErrResponse.FromString(body).Message)
        except DecodeError as e:
            return KMSError(status, f"invalid protobuf error body: {e}")
    return KMSError(status, body.decode("utf-8", errors="replace"))
