"""
Answering a request later: the API's resources return
C{NOT_DONE_YET} for a write, a read waiting for fresh state or a cluster
command, and finish the response when its Deferred fires.
"""

from twisted.logger import Logger
from twisted.web import server

from minkms.errors import KMSError, internal
from minkms.kms import result_error
from minkms.server.http import send_error, send_ok

log = Logger()

OCTET_STREAM = b"application/octet-stream"


def raise_apply_error(result):
    """A callback: raise the L{KMSError} an apply result carries, else pass it on."""
    error = result_error(result)
    if error is not None:
        raise error
    return result


def finish_later(request, d):
    """
    Send C{d}'s body (or its error as an error body) when it fires, unless
    the client has gone meanwhile (L{server.Request.notifyFinish} says so);
    any failure but a L{KMSError} is logged and answered 500.

    @return: C{NOT_DONE_YET}, for C{render}.
    """
    gone = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def ok(body):
        if not gone:
            request.write(send_ok(request, body, OCTET_STREAM))
            request.finish()

    def failed(failure):
        if failure.check(KMSError):
            error = failure.value
        else:
            log.failure("request failed", failure)
            error = internal("internal server error")
        if not gone:
            request.write(send_error(request, error))
            request.finish()

    d.addCallbacks(ok, failed)
    return server.NOT_DONE_YET
