"""
The HTTP API: a C{twisted.web} resource tree (spec section 3).

Every response body is complete bytes with a C{Content-Length} and no
content encoding: kms-go refuses bodies of unknown length.  Errors are
C{application/json} C{{"message": ...}} with the exact canonical texts.
"""

import time

from twisted.internet import defer
from twisted.web.resource import Resource

from minkms import version
from minkms.errors import ErrPermission, KMSError, bad_request, not_found, not_implemented
from minkms.kms import dispatch
from minkms.names import validate_name
from minkms.server.http import MAX_BODY, MAX_OTHER_BODY, Memo, caller_identity, send_error, send_ok
from minkms.server.membership import node_commands
from minkms.server.observe import note_command
from minkms.server.replies import OCTET_STREAM, finish_later, raise_apply_error
from minkms.state import authz
from minkms.wire import canonical, frames, jsonfmt, kms_pb2 as pb


class APIResource(Resource):
    """
    A resource whose errors are JSON error bodies: unknown children are
    404 and unsupported methods 405, like every other API error.
    """

    def getChild(self, path, request):
        return _NotFound()

    exact = False
    """A leaf that answers only its own path, not paths below it."""

    _handlers: dict[bytes, object] | None = None

    def render(self, request):
        if self.exact and request.postpath not in ([], [b""]):
            return send_error(request, not_found("no such API endpoint"))
        handlers = self._handlers
        if handlers is None:
            handlers = self._handlers = {
                name[len("render_") :].encode("ascii"): getattr(self, name)
                for name in dir(self)
                if name.startswith("render_")
            }
        handler = handlers.get(request.method)
        if handler is None:
            method = request.method.decode("ascii", "replace")
            return send_error(request, KMSError(405, f"method {method} not allowed"))
        return handler(request)


class _NotFound(Resource):
    isLeaf = True

    def render(self, request):
        return send_error(request, not_found("no such API endpoint"))


class VersionResource(APIResource):
    """C{GET /version}: unauthenticated, protobuf or proto-JSON by C{Accept}."""

    isLeaf = True
    exact = True

    def __init__(self, host: str) -> None:
        super().__init__()
        self._message = pb.VersionResponse(
            Version=version.VERSION,
            Commit=version.COMMIT,
            APIVersion=version.API_VERSION,
            Host=host,
            FIPS140=False,
        )

    def render_GET(self, request):
        return send_message(request, self._message)


def query_flags(request) -> set[bytes]:
    """
    The keys of the query string, bare ones included (C{?write}, C{?self}):
    C{request.args} drops keys that have no value.
    """
    _, _, query = request.uri.partition(b"?")
    return {part.split(b"=", 1)[0] for part in query.split(b"&") if part}


def send_message(request, message) -> bytes:
    """Answer with C{message} as protobuf or proto-JSON, as C{Accept} asks."""
    accept = request.getHeader(b"accept") or b""
    if jsonfmt.negotiate(accept.decode("latin-1")) == "protobuf":
        return send_ok(request, canonical.encode_message(message), OCTET_STREAM)
    return send_ok(request, jsonfmt.to_json(message), b"application/json")


class LiveResource(APIResource):
    """C{GET /v1/health/live}: 200 whenever the process serves HTTP."""

    isLeaf = True
    exact = True

    def render_GET(self, request):
        return send_ok(request, b"", b"application/json")


class ReadyResource(APIResource):
    """
    C{GET /v1/health/ready[?write]}: 200 if this node can serve reads, or
    with C{?write}, if the cluster can commit writes; 503 otherwise.  The
    C{Minkms-Reads} header says how it serves reads now: C{lease},
    C{read-index}, C{without-leader} or C{refused}.
    """

    isLeaf = True
    exact = True

    def __init__(self, node) -> None:
        super().__init__()
        self._node = node

    def render_GET(self, request):
        write = b"write" in query_flags(request)
        request.setHeader(b"minkms-reads", self._node.read_mode().encode("ascii"))
        if self._node.ready(write):
            return send_ok(request, b"", b"application/json")
        what = "writes" if write else "reads"
        return send_error(request, KMSError(503, f"node is not ready for {what}"))


class SysAdminResource(APIResource):
    """
    An endpoint only the SysAdmin may call: anyone else is refused (403)
    before any of a body is read.  Subclasses set C{_sysadmin}.
    """

    _sysadmin = ""

    def body_limit(self, method: bytes, rest: list[bytes], caller: str) -> int:
        """Only the SysAdmin may send a body here (L{minkms.server.http.body_limit})."""
        require_sysadmin(caller, self._sysadmin)
        return MAX_OTHER_BODY


class NotYetResource(SysAdminResource):
    """
    A SysAdmin endpoint this build does not offer yet (restart): 501 with
    a clear reason, as spec section 3 allows, rather than the 404 of an
    unknown path; 403 to anyone else, who may not call it at all.
    """

    isLeaf = True

    def __init__(self, what: str, sysadmin: str) -> None:
        super().__init__()
        self._what = what
        self._sysadmin = sysadmin

    def render(self, request):
        try:
            require_sysadmin(caller_identity(request), self._sysadmin)
        except KMSError as e:
            return send_error(request, e)
        return send_error(request, not_implemented(f"{self._what} is not supported by this server yet"))


def require_sysadmin(caller: str, sysadmin: str) -> str:
    """C{caller} if it is the SysAdmin; L{ErrPermission} otherwise."""
    if not caller or caller != sysadmin:
        raise ErrPermission
    return caller


class KMSResource(APIResource):
    """
    C{POST /v1/kms[/{enclave}]}: the framed command protocol (spec section 4).

    Reads run on the local applied state; writes are prepared here (checked,
    key material generated), replicated through the node, and answered once
    applied on this node.
    """

    isLeaf = True

    def __init__(self, node, sysadmin: str, clock=time) -> None:
        super().__init__()
        self._node = node
        self._sysadmin = sysadmin
        self._clock = clock

    def body_limit(self, method: bytes, rest: list[bytes], caller: str) -> int:
        """
        Whether C{caller} may POST to C{/v1/kms/REST} at all, decided from
        the path and its identity before the body is read (403 if not).
        An identity this node does not know is refused here only if its
        state is fresh now; else L{render_POST} decides once it is (the
        identity may have been created a moment ago).
        """
        if method != b"POST":
            return MAX_OTHER_BODY
        enclave = self._check_path(caller, rest)
        if enclave is not None:
            try:
                authz.subject(self._node.state.state, caller, False, enclave)
            except KMSError:
                if self._node.fresh_now():
                    raise
        return MAX_BODY

    def _check_path(self, caller: str, rest: list[bytes]) -> str | None:
        """The enclave a non-SysAdmin caller names, or 403; None for the SysAdmin."""
        if caller and caller == self._sysadmin:
            return None
        if not caller or len(rest) != 1 or not rest[0]:
            raise ErrPermission
        try:
            return rest[0].decode("utf-8")
        except UnicodeError:
            raise ErrPermission from None

    def _authenticate(self, caller: str, rest: list[bytes]) -> None:
        """
        Spec section 7.2 orders authentication first: a caller who is not
        the SysAdmin must be an identity of the enclave the path names, or
        is refused (403) before the path or the body are judged.
        """
        enclave = self._check_path(caller, rest)
        if enclave is not None:
            authz.subject(self._node.state.state, caller, False, enclave)

    def render_POST(self, request):
        caller = caller_identity(request)
        try:
            try:
                self._authenticate(caller, request.postpath)
            except KMSError as refused:
                barrier = self._node.read_barrier() if caller else None
                if barrier is None:
                    raise refused from None
                barrier.addCallback(lambda _: self._authenticate(caller, request.postpath))
                barrier.addCallback(lambda _: self._handle(request, caller))
                return finish_later(request, barrier)
            answer = self._handle(request, caller)
        except KMSError as e:
            return send_error(request, e)
        if isinstance(answer, bytes):
            return send_ok(request, answer, OCTET_STREAM)
        return finish_later(request, answer)

    def _handle(self, request, caller: str):
        """
        The answer to an authenticated request: its body, or a Deferred of
        it (a write, a read waiting for fresh state, a cluster command).
        """
        enclave = _enclave_of(request)
        decoded = frames.decode_request(request.content.read())
        command = decoded[0][0]
        note_command(request, enclave, command, decoded)
        ctx = dispatch.CallContext(
            caller=caller,
            enclave=enclave,
            sysadmin=self._sysadmin,
            now_ns=self._clock.time_ns(),
        )
        if node_commands.get(command.code) is not None:
            return self._cluster(ctx, command, decoded[0][1])
        if not command.write:
            barrier = self._node.read_barrier()
            if barrier is None:
                return self._read(ctx, command, decoded)
            return barrier.addCallback(lambda _: self._read(ctx, command, decoded))
        d = self._node.submit_write(ctx, command, decoded[0][1])
        d.addCallback(raise_apply_error)
        d.addCallback(lambda _: frames.encode_response(command.code, [None]))
        return d

    def _read(self, ctx, command, decoded) -> bytes:
        """Answer read frames from the node's applied state."""
        state = self._node.state
        replies = [dispatch.execute_read(state, ctx, command, message) for _, message in decoded]
        return frames.encode_response(command.code, replies)

    def _cluster(self, ctx, command, message):
        """A cluster row the node runs (L{minkms.server.membership.node_commands})."""
        require_sysadmin(ctx.caller, self._sysadmin)
        if ctx.enclave:
            raise bad_request(f"{command.name} is a cluster command: send it without an enclave")
        d = defer.maybeDeferred(self._node.cluster_command, command, message)
        d.addCallback(lambda answer: frames.encode_response(command.code, [answer]))
        return d


_enclave_names = Memo()


def _enclave_of(request) -> str:
    """
    The enclave named by the path: C{/v1/kms} and C{/v1/kms/} name none,
    C{/v1/kms/NAME} names NAME (Twisted has percent-decoded the segments).
    A valid name is remembered by its bytes (at most 256, then the memory
    starts afresh): every request of a tenant names the same enclave.
    """
    rest = request.postpath
    if len(rest) == 1:
        known = _enclave_names.get(rest[0])
        if known is not None:
            return known
    if not rest or rest == [b""]:
        return ""
    if len(rest) > 1:
        raise bad_request("invalid enclave name: must not contain '/'")
    try:
        name = rest[0].decode("utf-8")
    except UnicodeError:
        raise bad_request("invalid enclave name: not UTF-8") from None
    validate_name("enclave", name)
    _enclave_names.keep(rest[0], name)
    return name


def build_root(node, sysadmin: str, extra: dict | None = None) -> Resource:
    """The resource tree of one node's API."""
    root = APIResource()
    root.putChild(b"version", VersionResource(node.host))
    v1 = APIResource()
    root.putChild(b"v1", v1)
    health = APIResource()
    v1.putChild(b"health", health)
    health.putChild(b"live", LiveResource())
    health.putChild(b"ready", ReadyResource(node))
    v1.putChild(b"kms", KMSResource(node, sysadmin))
    debug = APIResource()
    v1.putChild(b"debug", debug)
    debug.putChild(b"log", NotYetResource("log streaming (/v1/debug/log)", sysadmin))
    debug.putChild(b"pprof", NotYetResource("profiling (/v1/debug/pprof)", sysadmin))
    debug.putChild(b"restart", NotYetResource("restart (/v1/debug/restart)", sysadmin))
    for path, resource in (extra or {}).items():
        parent = v1
        parts = path.split(b"/")
        for part in parts[:-1]:
            parent = parent.children[part]
        parent.putChild(parts[-1], resource)
    return root
