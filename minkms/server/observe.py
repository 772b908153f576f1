"""
Where API requests and TLS connections are observed for the metrics and
the audit trail.

L{ObservedRoot} wraps the API's resource tree: it notes when a request
starts and, once the request is answered (or the client goes), counts it
and writes its audit record.  The KMS resource tells which command a
request carried with the one call L{note_command}.  L{MeteredSwitchFactory}
counts TLS handshakes and open connections.
"""

import time

from twisted.internet.interfaces import IHandshakeListener
from twisted.web.resource import Resource
from zope.interface import implementer

from minkms.server.http import caller_identity
from minkms.server.listener import ProtocolSwitch, SwitchFactory

CLIENT_GONE = 499
"""The status counted for a request whose client left before the answer."""

ENDPOINTS = {
    b"/version": "version",
    b"/v1/health/live": "health/live",
    b"/v1/health/ready": "health/ready",
    b"/v1/metrics": "metrics",
    b"/v1/db": "db",
    b"/v1/debug/log": "debug/log",
    b"/v1/debug/pprof": "debug/pprof",
    b"/v1/debug/restart": "debug/restart",
}
UNAUDITED = frozenset({"version", "health/live", "health/ready"})
"""Unauthenticated probes: counted in the metrics, not in the audit trail."""

_NAME_FIELDS = ("Name", "Identity", "Host", "Prefix")


def note_command(request, enclave: str, command, decoded) -> None:
    """Tell the observer which KMS command (and objects) C{request} carries."""
    request.minkms_call = (enclave, command.name, decoded)


def endpoint_of(request) -> str:
    """A fixed name for the endpoint of C{request}: never a tenant's name."""
    path = request.path.split(b"?", 1)[0].rstrip(b"/") or b"/"
    if path == b"/v1/kms" or path.startswith(b"/v1/kms/"):
        return "kms"
    return ENDPOINTS.get(path, "other")


def object_names(decoded) -> list:
    """The names each message of a KMS request is about (key, identity...)."""
    names = []
    for _, message in decoded:
        for field in _NAME_FIELDS:
            if message is not None and field in message.DESCRIPTOR.fields_by_name:
                names.append(getattr(message, field))
                break
    return names


class _Finished:
    """
    What L{RequestObserver} puts in a request's C{notifications}: the
    request calls C{callback(None)} once answered or C{errback(reason)} if
    the client left, as it does the Deferreds of C{notifyFinish}, at a
    fraction of a Deferred's cost per request.
    """

    __slots__ = ("_observer", "_request")

    def __init__(self, observer, request) -> None:
        self._observer = observer
        self._request = request

    def callback(self, result) -> None:
        self._observer.end(result, self._request)

    errback = callback


class RequestObserver:
    """
    Counts each request in L{Metrics} and hands it to the audit writer.
    Requests in flight are a plain count that the gauge reads when scraped.
    """

    def __init__(self, metrics, audit=None, clock=time.perf_counter, wall=time.time) -> None:
        self.metrics = metrics
        self._tally = metrics.requests.observe
        self.audit = audit
        self._clock = clock
        self._wall = wall
        self.in_flight = 0
        metrics.in_flight.set_function(lambda: self.in_flight)

    def begin(self, request) -> None:
        """A request arrived (once per request)."""
        if getattr(request, "minkms_started", None) is not None:
            return
        request.minkms_started = self._clock()
        if self.audit is not None:
            request.minkms_identity = caller_identity(request)
        self.in_flight += 1
        notifications = getattr(request, "notifications", None)
        if notifications is None:
            request.notifyFinish().addBoth(self.end, request)
        else:
            notifications.append(_Finished(self, request))

    def end(self, result, request) -> None:
        """C{request} was answered (C{result} None) or its client left (a failure)."""
        seconds = self._clock() - request.minkms_started
        self.in_flight -= 1
        status = CLIENT_GONE if result is not None else request.code
        call = getattr(request, "minkms_call", None)
        command = call[1] if call else endpoint_of(request)
        self._tally(command, status, seconds)
        if self.audit is not None and command not in UNAUDITED:
            self.audit.record(self._record(request, call, command, status, seconds))

    def _record(self, request, call, command, status, seconds) -> dict:
        from minkms.server.audit import utc_text

        record = {
            "kind": "request",
            "time": utc_text(self._wall() - seconds),
            "identity": request.minkms_identity,
            "enclave": call[0] if call else "",
            "command": command,
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
        }
        if call:
            names = object_names(call[2])
            record["object"] = names[0] if len(names) == 1 else names
        return record


class ObservedRoot(Resource):
    """The API's root resource, observed: every request passes here first."""

    def __init__(self, root, observer: RequestObserver) -> None:
        super().__init__()
        self._root = root
        self._observer = observer
        self.children = root.children

    def getChildWithDefault(self, path, request):
        self._observer.begin(request)
        return self._root.getChildWithDefault(path, request)

    def render(self, request):
        self._observer.begin(request)
        return self._root.render(request)


@implementer(IHandshakeListener)
class MeteredSwitch(ProtocolSwitch):
    """A L{ProtocolSwitch} that counts handshakes and open connections."""

    _shaken = False

    def connectionMade(self) -> None:
        self._factory.metrics.connections.inc()
        super().connectionMade()

    def handshakeCompleted(self) -> None:
        self._shaken = True
        self._factory.metrics.handshakes.inc()
        super().handshakeCompleted()

    def connectionLost(self, reason) -> None:
        self._factory.metrics.connections.dec()
        if not self._shaken:
            self._factory.metrics.handshake_failures.inc()
        super().connectionLost(reason)


class MeteredSwitchFactory(SwitchFactory):
    """A L{SwitchFactory} whose connections are counted in C{metrics}."""

    def __init__(self, http, peer=None, metrics=None, **limits) -> None:
        super().__init__(http, peer, **limits)
        self.metrics = metrics

    def buildProtocol(self, addr):
        return MeteredSwitch(self, addr)
