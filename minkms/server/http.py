"""
HTTP plumbing shared by the API resources: the request class that refuses
oversized bodies before reading them, the caller's identity, and the two
ways a response ends (complete bytes, or a JSON error).
"""

from twisted.web import server

from minkms.errors import KMSError
from minkms.tls import peer_identity
from minkms.wire import errors as wire_errors

MAX_BODY = 1 << 20
"""Largest request body for C{/v1/kms} (1 MiB, as KES): 413 above it."""

MAX_DB_BODY = 64 << 20
"""Largest C{PUT /v1/db} body (a sealed state snapshot; one Raft entry)."""

_BODY_LIMITS = {b"/v1/db": MAX_DB_BODY}


class LimitedRequest(server.Request):
    """
    A request that answers 413 and closes the connection as soon as the
    headers announce (or the body exceeds) the size limit, instead of
    buffering the whole body first.
    """

    _limit = MAX_BODY
    _received = 0
    _refused = False

    def gotLength(self, length):
        path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
        self._limit = _BODY_LIMITS.get(path, MAX_BODY)
        if length is not None and length > self._limit:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self):
        self._refused = True
        ctype, body = wire_errors.error_body(
            KMSError(413, f"request body too large: limit is {self._limit} bytes"), ""
        )
        head = (
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: " + ctype + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        self.channel.transport.write(head + body)
        self.channel.loseConnection()


class APISite(server.Site):
    """
    The site of the API: bodies limited by L{LimitedRequest}, no form
    parsing (bodies are protobuf frames), no tracebacks in responses, and
    no per-request access log line (it cost a third of the CPU of a
    decrypt; requests will be recorded by the audit trail instead).
    """

    requestFactory = LimitedRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, resource) -> None:
        super().__init__(resource, parsePOSTFormSubmission=False)

    def log(self, request) -> None:
        pass


def caller_identity(request) -> str:
    """
    The C{h1:} identity of the client certificate of C{request}'s
    connection, or C{""}; computed once per connection.
    """
    channel = request.channel
    identity = getattr(channel, "_minkms_identity", None)
    if identity is None:
        identity = peer_identity(channel.transport)
        channel._minkms_identity = identity
    return identity


def send_ok(request, body: bytes, content_type: bytes) -> bytes:
    """Status 200 with a complete body (so Content-Length is always set)."""
    request.setResponseCode(200)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def send_error(request, error: KMSError) -> bytes:
    """The error body of spec section 7.1 with C{error}'s status."""
    accept = (request.getHeader(b"accept") or b"").decode("latin-1")
    ctype, body = wire_errors.error_body(error, accept)
    request.setResponseCode(error.status)
    request.setHeader(b"content-type", ctype)
    request.setHeader(b"content-length", b"%d" % len(body))
    return body
