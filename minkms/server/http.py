"""
HTTP plumbing shared by the API resources: the channel that gives each
request's headers and body a deadline, the request class that decides from
the headers and the caller's identity whether to read a body at all, the
caller's identity, and the two ways a response ends (complete bytes, or a
JSON error).
"""

import re
import time
from io import BytesIO
from urllib.parse import unquote_to_bytes

from twisted.protocols import basic
from twisted.python import failure
from twisted.web import http, resource, server
from twisted.web.http_headers import Headers

from minkms.errors import KMSError
from minkms.server.limits import ConnectionLimits
from minkms.tls import peer_identity
from minkms.wire import errors as wire_errors

MAX_BODY = 1 << 20
"""Largest request body for C{/v1/kms} (1 MiB, as KES): 413 above it."""

MAX_DB_BODY = 64 << 20
"""Largest C{PUT /v1/db} body (a sealed state snapshot; one Raft entry)."""

MAX_OTHER_BODY = 4096
"""Largest body of a request to a resource that reads none (405/404/501)."""

REFUSAL_GRACE = 5.0
"""Seconds a refused client has to read the answer before the connection is
cut, whether or not it acknowledges the TLS close (and however much more
body it sends)."""

_REASONS = {403: b"Forbidden", 408: b"Request Timeout", 413: b"Request Entity Too Large"}

MAX_FAST_HEAD = 8192
"""Longest request head (request line, headers, blank line) parsed in one pass; a longer one goes line by line."""

MAX_FAST_FIELDS = 64
"""Most header lines parsed in one pass (Twisted allows 500, line by line)."""

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEAD = re.compile(rb"(%s) ([!-~]+) HTTP/1\.1\r\n((?:%s:[\t -~]*\r\n)*)\r\n" % (_TOKEN, _TOKEN))

_STOCK_FIELDS = frozenset((b"Transfer-Encoding", b"Expect", b"Connection", b"Cookie"))
"""Headers whose meaning is left to Twisted's own parser (a request with one goes line by line)."""


class Memo(dict):
    """
    What was worked out for the few keys clients send again and again (a
    header name, a request head, a path, an enclave name), looked up with
    C{get}: at most C{size} keys, of at most C{longest} bytes each, then the
    memory starts afresh, so odd keys cost their work each time and no
    memory.
    """

    def __init__(self, size: int = 256, longest: int | None = None) -> None:
        super().__init__()
        self._size = size
        self._longest = longest

    def keep(self, key, value) -> None:
        """Remember C{value} for C{key}, unless the key is longer than is worth remembering."""
        if self._longest is not None and len(key) > self._longest:
            return
        if len(self) >= self._size:
            self.clear()
        self[key] = value


_field_names = Memo()

MAX_KNOWN_HEADS = 256
"""Most distinct request heads remembered (then the memory starts afresh)."""

MAX_KNOWN_HEAD = 1024
"""Longest request head remembered: a client sends the same few heads again and again."""

_heads = Memo(MAX_KNOWN_HEADS, MAX_KNOWN_HEAD)


def _canonical_name(name: bytes) -> bytes:
    """
    The name Twisted's L{Headers} files a header under (its Http-Header-Case
    and exceptions such as C{ETag}), asked of L{Headers} once per spelling and
    remembered (at most 256 spellings, then the memory starts afresh).
    """
    canonical = _field_names.get(name)
    if canonical is None:
        headers = Headers()
        headers.addRawHeader(name, b"")
        canonical = next(headers.getAllRawHeaders())[0]
        _field_names.keep(name, canonical)
    return canonical


def parse_head(buffer: bytes):
    """
    The request head at the start of C{buffer}, parsed in one pass if it
    is an ordinary one: C{(method, target, fields, content_length, end)}
    with C{fields} the header values by canonical name (a new dict, as
    L{Headers} keeps them), C{content_length} the bytes of the one
    C{Content-Length} or None, C{end} the offset just past the blank line.

    Ordinary means what Twisted's line-by-line parser
    (C{HTTPChannel.lineReceived}) would accept and read the same way:
    HTTP/1.1, a token method, a target of visible ASCII, at most
    L{MAX_FAST_FIELDS} header lines of a token name and a value of visible
    ASCII, spaces and tabs, in at most L{MAX_FAST_HEAD} bytes, at most one
    C{Content-Length} and it all digits, and none of L{_STOCK_FIELDS}.
    Anything else (an incomplete head, HTTP/1.0, line folding, a control or
    non-ASCII byte, a duplicate length...) is None: the caller hands it to
    Twisted, which accepts it or answers 400 as it always does.

    A client sends the same few heads again and again (Go's transport: the
    same headers, the same length for the same command), so what a head
    parses to is remembered by its bytes (L{MAX_KNOWN_HEADS} of at most
    L{MAX_KNOWN_HEAD} bytes).
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_FAST_HEAD)
    if end < 0:
        return None
    end += 4
    head = buffer[:end]
    known = _heads.get(head)
    if known is None:
        known = _parse_head(head)
        if known is None:
            return None
        _heads.keep(head, known)
    method, target, pairs, length, repeats = known
    if repeats:
        fields: dict[bytes, list[bytes]] = {}
        for name, value in pairs:
            fields.setdefault(name, []).append(value)
    else:
        fields = {name: [value] for name, value in pairs}
    return method, target, fields, length, end


def _parse_head(head: bytes):
    """
    L{parse_head} of a whole head: C{(method, target, pairs, length,
    repeats)} with C{pairs} the (canonical name, value) of each header line
    in order and C{repeats} whether a name occurs twice; None if it is not
    an ordinary head.
    """
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    block = match.group(3)
    lines = block[:-2].split(b"\r\n") if block else []
    if len(lines) > MAX_FAST_FIELDS:
        return None
    pairs = []
    length = None
    for line in lines:
        name, _, value = line.partition(b":")
        name = _canonical_name(name)
        value = value.strip(b" \t")
        if name == b"Content-Length":
            if length is not None or not value.isdigit():
                return None
            length = value
        elif name in _STOCK_FIELDS:
            return None
        pairs.append((name, value))
    repeats = len({name for name, _ in pairs}) != len(pairs)
    return match.group(1), match.group(2), tuple(pairs), length, repeats


_segments = Memo(256, 512)


def path_segments(path: bytes) -> list[bytes]:
    """
    The percent-decoded segments of C{path} (what Twisted's
    C{Request.process} makes C{postpath} of), a new list each time;
    remembered for the few paths clients send (256 paths of at most 512
    bytes, then the memory starts afresh).
    """
    found = _segments.get(path)
    if found is None:
        found = tuple(map(unquote_to_bytes, path[1:].split(b"/")))
        _segments.keep(path, found)
    return list(found)


_date_second = -1
_date_text = b""


def http_date() -> bytes:
    """
    The C{Date} header value for now, formatted once per second rather
    than per response (Twisted formats it per request).
    """
    global _date_second, _date_text
    now = int(time.time())
    if now != _date_second:
        _date_second, _date_text = now, http.datetimeToString(now)
    return _date_text


_RESPONSE_FIELDS = {
    b"content-type": b"Content-Type",
    b"Content-Type": b"Content-Type",
    b"content-length": b"Content-Length",
    b"Content-Length": b"Content-Length",
    b"minkms-reads": b"Minkms-Reads",
}
"""
The response headers minkms sets on every answer, by the spellings it
uses, with the name L{Headers} files them under.
"""

_NO_BODY_CODES = frozenset(http.NO_BODY_CODES)


def _twisted_internals_known() -> bool:
    """
    Whether Twisted's HTTP channel and headers still have the private
    state the one-pass path reads and sets (checked by name at import; the
    fast-path tests check the behaviour byte for byte).
    """
    channel = http.HTTPChannel()
    names = ("_HTTPChannel__first_line", "_HTTPChannel__header", "_busyReceiving", "_buffer", "_dataBuffer")
    methods = ("_maybeChooseTransferDecoder", "allContentReceived", "setRawMode", "rawDataReceived")
    return all(hasattr(channel, name) for name in names + methods) and hasattr(Headers(), "_rawHeaders")


class BodyRules:
    """
    How many body bytes a caller may send with a request, decided before
    any is read: the resource a path leads to answers through its
    C{body_limit(method, rest, caller)} (C{rest}: the path segments below
    it, a list the rule must not change), which raises L{KMSError} (403)
    for a caller who may not call it.

    The resource tree is built before the site serves, so the rule of a
    path is found by walking the tree once and remembered: clients send the
    same few paths on every request.  At most L{MAX_PATHS} paths of at most
    L{MAX_PATH_LENGTH} bytes are remembered (then the memory starts afresh),
    so odd paths cost a walk each and no memory.
    """

    MAX_PATHS = 256
    MAX_PATH_LENGTH = 512

    def __init__(self, root) -> None:
        self._root = root
        self._rules = Memo(self.MAX_PATHS, self.MAX_PATH_LENGTH)

    def limit(self, method: bytes, path: bytes, caller: str) -> int:
        """The body limit of C{method path} for C{caller}; L{KMSError} to refuse it."""
        path = path.split(b"?", 1)[0]
        found = self._rules.get(path)
        if found is None:
            found = self._find(path)
            self._rules.keep(path, found)
        rule, rest = found
        if rule is None:
            return MAX_OTHER_BODY
        return rule(method, rest, caller)

    def _find(self, path: bytes) -> tuple:
        """The C{body_limit} rule of the resource C{path} leads to (or None), and the rest of the path."""
        segments = path_segments(path)
        resource = self._root
        while segments and not resource.isLeaf:
            resource = resource.children.get(segments[0])
            if resource is None:
                return None, []
            segments = segments[1:]
        return getattr(resource, "body_limit", None), segments


class LimitedRequest(server.Request):
    """
    A request whose body is judged before it is read: from the headers
    (C{Content-Length}, or chunks counted as they arrive) and the caller's
    TLS identity, it answers 403 to a caller who may not call the path and
    413 past the limit for this caller and path, then closes the
    connection.  A body must arrive whole within the channel's
    C{body_timeout} (408 otherwise), however slowly it trickles.
    """

    _limit = MAX_BODY
    _received = 0
    _refused = False
    _grace = None

    def gotLength(self, length, whole=False):
        """
        Judge the body announced (L{LimitedRequest}) and make its buffer: in
        memory up to 100,000 bytes, as Twisted does, without asking the site
        for a C{getContentFile} it does not have.  C{whole}: the body is
        already here (the channel's one-pass path), so no deadline is set
        for it.
        """
        if length != 0:
            try:
                self._limit = self.channel.site.body_rules.limit(
                    self.channel._command, self.channel._path, caller_identity(self)
                )
            except KMSError as e:
                self._refuse(e)
                return
            if length is not None and length > self._limit:
                self._refuse(self._too_large())
                return
            if not whole:
                self.channel.await_body(self)
        if length is not None and length < 100000:
            self.content = BytesIO()
        else:
            super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._refuse(self._too_large())
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        """
        As C{http.Request.requestReceived} for a site that parses no form
        bodies (L{APISite}): the request line kept, the query string parsed
        into C{args}, then C{process}; without the Content-Type lookup that
        only form parsing needs.
        """
        if self._refused:
            return
        self.channel.body_received(self)
        if self._parsePOSTFormSubmission or not self.channel.fast_path:
            return super().requestReceived(command, path, version)
        self.content.seek(0, 0)
        self.method, self.uri, self.clientproto = command, path, version
        self.path, mark, query = path.partition(b"?")
        self.args = http.parse_qs(query, 1) if mark else {}
        self.process()

    def finish(self):
        """
        The end of an answer written whole by L{write}: as Twisted's
        C{finish} (nothing more to write, no encoder, and the site logs
        nothing: L{APISite.log}), straight to the clean-up that hands the
        channel its next request.
        """
        if (
            not self.startedWriting
            or self.chunked
            or self.finished
            or self._disconnected
            or self.queued
            or self._encoder is not None
            or not self.channel.fast_path
        ):
            return super().finish()
        self.finished = 1
        self._cleanup()

    def connectionLost(self, reason):
        self._stop_grace()
        super().connectionLost(reason)

    def process(self):
        """
        As C{server.Request.process}, with the C{Server} and C{Date} headers
        filed directly (the date formatted once a second), the path's
        segments remembered (L{path_segments}), and without the copy of an
        empty path list and the search for a content encoder (no resource
        of the API encodes its answers).  With the channel's
        C{fast_path} off, Twisted's own.
        """
        if not self.channel.fast_path:
            return super().process()
        self.site = site = self.channel.site
        fields = self.responseHeaders._rawHeaders
        fields[b"Server"] = [server.version]
        fields[b"Date"] = [http_date()]
        self.prepath = []
        self.postpath = path_segments(self.path)
        if self.path == b"*":
            self._handleStar()
            return
        try:
            self.sitepath = []
            self.render(resource.getChildForRequest(site.resource, self))
        except BaseException:
            self.processingFailed(failure.Failure())

    def setHeader(self, name, value):
        """
        The headers minkms sets on every answer (L{_RESPONSE_FIELDS}) filed
        directly when their value needs no cleaning, as
        C{Headers.setRawHeaders} would file them; any other through it.
        """
        canonical = _RESPONSE_FIELDS.get(name)
        if canonical is None or value.__class__ is not bytes or b"\r" in value or b"\n" in value:
            return super().setHeader(name, value)
        self.responseHeaders._rawHeaders[canonical] = [value]

    def write(self, data):
        """
        The first write of an ordinary answer (HTTP/1.1, not to C{HEAD},
        with a body, a C{Content-Type} and a C{Content-Length}, no cookie,
        C{ETag} or C{Last-Modified}) sends the status line, the headers and
        C{data} in one transport write, the bytes Twisted's
        C{Request.write} would send; anything else goes through it.
        """
        if (
            self.startedWriting
            or self.finished
            or self._disconnected
            or self.clientproto != b"HTTP/1.1"
            or self.method == b"HEAD"
            or self.code in _NO_BODY_CODES
            or self._inFakeHead
            or self._encoder is not None
            or self.lastModified is not None
            or self.etag is not None
            or self.cookies
            or not self.channel.fast_path
        ):
            return super().write(data)
        fields = self.responseHeaders._rawHeaders
        if b"Content-Length" not in fields or b"Content-Type" not in fields:
            return super().write(data)
        self.startedWriting = 1
        parts = [b"HTTP/1.1 %d %s\r\n" % (self.code, self.code_message)]
        for name, values in fields.items():
            for value in values:
                parts.append(b"%s: %s\r\n" % (name, value))
        parts.append(b"\r\n")
        parts.append(data)
        self.sentLength += len(data)
        self.channel.transport.write(b"".join(parts))

    def _stop_grace(self):
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None

    def _too_large(self) -> KMSError:
        return KMSError(413, f"request body too large: limit is {self._limit} bytes")

    def too_slow(self):
        """The body did not arrive within the channel's C{body_timeout}: 408."""
        self._refuse(KMSError(408, "request body not received in time"))

    def _refuse(self, error: KMSError):
        self.channel.body_received(self)
        self._refused = True
        ctype, body = wire_errors.error_body(error, "")
        head = (
            b"HTTP/1.1 %d %s\r\n" % (error.status, _REASONS.get(error.status, b"Error"))
            + b"Content-Type: "
            + ctype
            + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        self.channel.transport.write(head + body)
        self.channel.loseConnection()
        self._stop_grace()
        self._grace = self.channel.callLater(REFUSAL_GRACE, self.channel.transport.abortConnection)


def _rearm(call, seconds: float, schedule, action):
    """
    C{call} moved to C{seconds} from now if it is still pending (which
    costs next to nothing when that is later than it was due), else a
    new call of C{action}.
    """
    if call is not None and call.active():
        call.reset(seconds)
        return call
    return schedule(seconds, action)


class APIChannel(http.HTTPChannel):
    """
    An HTTP channel whose requests must arrive in time: a request's headers
    within C{request_timeout} (counted from the start of the connection for
    the first request, from its first byte for later ones), its body within
    C{body_timeout} (see L{LimitedRequest}).  Between requests the site's
    idle timeout applies.  A request that is not in time closes the
    connection.
    """

    request_timeout = 5.0
    body_timeout = 60.0
    _headers_deadline = None
    _awaiting_headers = False
    _awaiting_request = False
    _body_deadline = None
    _body_request = None
    _peer = None
    _host = None
    _idle_call = None

    # A deadline that is met is not cancelled: its call stays scheduled,
    # does nothing if it fires, and is moved on (cheaply, as it only ever
    # moves later) for the next request.  Per request that saves creating
    # and cancelling two delayed calls.

    def connectionMade(self):
        super().connectionMade()
        self._await_headers()

    fast_path = _twisted_internals_known()
    """
    Whether an ordinary request head is parsed in one pass and an ordinary
    answer written in one (L{parse_head}, L{LimitedRequest.write}); the
    tests turn it off to compare the answers with Twisted's own.  Off by
    itself on a Twisted whose channel lacks the internals it sets.
    """

    def dataReceived(self, data):
        """
        As C{HTTPChannel.dataReceived} (whose line reader,
        C{LineReceiver.dataReceived}, this mirrors), except that a request
        head found whole at the start of the buffer is parsed by
        L{parse_head} in one pass rather than line by line.  The first head
        it does not take, and all that follows it in the buffer, go to
        Twisted's line reader.
        """
        if self._awaiting_request and data:
            self._await_headers()
        if self._busyReceiving or not self.fast_path:
            return super().dataReceived(data)
        self.resetTimeout()
        self._buffer += data
        self._busyReceiving = True
        try:
            while self._buffer and not self.paused:
                if not self.line_mode:
                    data, self._buffer = self._buffer, b""
                    self.rawDataReceived(data)
                elif not self._fast_head():
                    break
                elif self.transport and self.transport.disconnecting:
                    return
        finally:
            self._busyReceiving = False
        if self._buffer and not self.paused:
            basic.LineReceiver.dataReceived(self, b"")

    def _fast_head(self) -> bool:
        """
        Take the request head at the start of the buffer if L{parse_head}
        can, leaving the channel and the new request as
        C{HTTPChannel.lineReceived} and C{allHeadersReceived} leave them
        after the blank line; False, changing nothing, if not.  A body
        already whole in the buffer is handed to the request at once, as
        Twisted's identity decoder would hand it; one still arriving (or
        refused) is read as Twisted reads it.
        """
        if not self.persistent or not self._HTTPChannel__first_line or self._HTTPChannel__header:
            return False
        head = parse_head(self._buffer)
        if head is None:
            return False
        method, target, fields, length, end = head
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        self._HTTPChannel__first_line = 0
        self._command, self._path, self._version = method, target, b"HTTP/1.1"
        request.requestHeaders._rawHeaders = fields
        self._awaiting_headers = False
        buffer = self._buffer
        # What allHeadersReceived does, for a request without Cookie, Connection
        # or Expect (parse_head leaves those to Twisted): it stays persistent,
        # cookies and 100-continue do not apply.
        size = 0 if length is None else int(length)
        if size == 0:
            self._buffer = buffer[end:]
            request.gotLength(0)
            self.allContentReceived()
            return True
        rest = end + size
        if len(buffer) < rest:
            self._buffer = buffer[end:]
            self._maybeChooseTransferDecoder(b"Content-Length", length)
            request.gotLength(size)
            self.setRawMode()
            return True
        # The whole body is here: what the identity decoder would do with it.
        self._buffer = b""
        self.length = size
        request.gotLength(size, whole=True)
        if self.transport and self.transport.disconnecting:
            self._buffer = buffer[end:]
            self._maybeChooseTransferDecoder(b"Content-Length", length)
            self.setRawMode()
            return True
        request.handleContentChunk(buffer[end:rest])
        self._dataBuffer.append(buffer[rest:])
        self.allContentReceived()
        return True

    def allHeadersReceived(self):
        self._awaiting_headers = False
        super().allHeadersReceived()

    def getPeer(self):
        """The client's address, asked of the socket once per connection (every request reads it)."""
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def getHost(self):
        """This end's address, asked of the socket once per connection."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def _send100Continue(self):
        if not self.requests[-1]._refused:
            super()._send100Continue()

    def requestDone(self, request):
        self._awaiting_request = True
        super().requestDone(request)

    def connectionLost(self, reason):
        self._awaiting_headers = False
        self._body_request = None
        for call in (self._headers_deadline, self._body_deadline, self._idle_call):
            if call is not None and call.active():
                call.cancel()
        self._headers_deadline = self._body_deadline = self._idle_call = None
        super().connectionLost(reason)

    def setTimeout(self, period):
        """
        The idle timeout of L{TimeoutMixin<twisted.protocols.policies.TimeoutMixin>},
        which C{HTTPChannel} turns off (C{None}) while it handles a request
        and on again after it: here turning it off leaves its call
        scheduled (it does nothing if it fires then) and turning it on
        moves that call on, rather than a delayed call cancelled and
        created per request.
        """
        previous, self.timeOut = self.timeOut, period
        if period is not None:
            self._idle_call = _rearm(self._idle_call, period, self.callLater, self._idle_expired)
        return previous

    def resetTimeout(self):
        if self.timeOut is not None and self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self.timeOut)

    def _idle_expired(self):
        self._idle_call = None
        if self.timeOut is not None:
            self.timeoutConnection()

    def await_body(self, request) -> None:
        """C{request}'s body must arrive within C{body_timeout} from now."""
        self._body_request = request
        self._body_deadline = _rearm(self._body_deadline, self.body_timeout, self.callLater, self._body_too_slow)

    def body_received(self, request) -> None:
        """C{request}'s body arrived (or was refused): its deadline is met."""
        if self._body_request is request:
            self._body_request = None

    def _body_too_slow(self):
        self._body_deadline = None
        request, self._body_request = self._body_request, None
        if request is not None:
            request.too_slow()

    def _await_headers(self):
        self._awaiting_request = False
        self._awaiting_headers = True
        self._headers_deadline = _rearm(
            self._headers_deadline, self.request_timeout, self.callLater, self._headers_too_slow
        )

    def _headers_too_slow(self):
        self._headers_deadline = None
        if self._awaiting_headers:
            self.transport.abortConnection()


class APISite(server.Site):
    """
    The site of the API: bodies limited by L{LimitedRequest}, no form
    parsing (bodies are protobuf frames), no tracebacks in responses, and
    no per-request access log line (it cost a third of the CPU of a
    decrypt; requests will be recorded by the audit trail instead).
    """

    protocol = APIChannel
    requestFactory = LimitedRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, resource, limits: ConnectionLimits = ConnectionLimits()) -> None:
        super().__init__(resource, parsePOSTFormSubmission=False, timeout=limits.idle_timeout)
        self._limits = limits
        self.body_rules = BodyRules(resource)

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        channel.request_timeout = self._limits.request_timeout
        channel.body_timeout = self._limits.body_timeout
        return channel

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
