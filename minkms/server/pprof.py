"""
C{/v1/debug/pprof} (spec section 3, SysAdmin): profile this process.

C{POST ?cpu=true&heap=...} starts cProfile on the reactor thread (where
the server's work runs) and, with C{heap=true}, tracemalloc; C{GET}
answers a C{ProfileStatusResponse}; C{DELETE} stops and answers a TAR
with C{cpu.pstats} (the C{marshal} format that L{pstats.Stats} loads) and
C{heap.txt} (the largest allocation sites).  Go's other profile kinds
(threads, block, mutex) have no Python counterpart and are refused.
"""

import cProfile
import io
import marshal
import tarfile
import time
import tracemalloc

from twisted.logger import Logger

from minkms.errors import ErrPermission, KMSError, bad_request
from minkms.server.api import SysAdminResource, send_message
from minkms.server.http import caller_identity, send_error, send_ok
from minkms.wire import kms_pb2 as pb

log = Logger()

HEAP_SITES = 200


class Profiler:
    """One profiling session at a time for this process."""

    def __init__(self) -> None:
        self._cpu = None
        self._heap = False
        self._started = None

    @property
    def running(self) -> bool:
        """Whether a session is open."""
        return self._started is not None

    def start(self, cpu: bool, heap: bool) -> None:
        """Start profiling; a second start while one runs is refused."""
        if self.running:
            raise KMSError(409, "profiling is already running: stop it first (DELETE /v1/debug/pprof)")
        if not cpu and not heap:
            raise bad_request("nothing to profile: ask for cpu=true and/or heap=true")
        if cpu:
            profile = cProfile.Profile()
            try:
                profile.enable()
            except ValueError:
                raise KMSError(409, "another profiler is already active in this process") from None
            self._cpu = profile
        if heap and not tracemalloc.is_tracing():
            tracemalloc.start()
            self._heap = True
        self._started = time.time()

    def status(self) -> pb.ProfileStatusResponse:
        """The C{ProfileStatusResponse} of the open session (empty if none)."""
        status = pb.ProfileStatusResponse(CPU=self._cpu is not None, Heap=self._heap)
        if self._started is not None:
            status.Started.FromNanoseconds(int(self._started * 1e9))
        return status

    def stop(self) -> bytes:
        """Stop and return the TAR of the profiles."""
        if not self.running:
            raise bad_request("profiling is not running: start it first (POST /v1/debug/pprof)")
        files = {}
        if self._cpu is not None:
            self._cpu.disable()
            self._cpu.create_stats()
            files["cpu.pstats"] = marshal.dumps(self._cpu.stats)
        if self._heap:
            snapshot = tracemalloc.take_snapshot()
            tracemalloc.stop()
            lines = [str(stat) for stat in snapshot.statistics("lineno")[:HEAP_SITES]]
            files["heap.txt"] = ("\n".join(lines) + "\n").encode("utf-8")
        self._cpu, self._heap, self._started = None, False, None
        return pack_tar(files)


def pack_tar(files: dict) -> bytes:
    """A TAR archive of C{{name: bytes}}."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _flag(request, name: bytes) -> bool:
    values = request.args.get(name) or [b"false"]
    value = values[0].lower()
    if value not in (b"true", b"false"):
        raise bad_request(f"invalid {name.decode()}: must be true or false")
    return value == b"true"


class ProfileResource(SysAdminResource):
    """The profiling endpoint of one node (SysAdmin only)."""

    isLeaf = True
    exact = True

    def __init__(self, profiler: Profiler, sysadmin: str) -> None:
        super().__init__()
        self._profiler = profiler
        self._sysadmin = sysadmin

    def _check(self, request) -> None:
        if caller_identity(request) != self._sysadmin:
            raise ErrPermission

    def render_POST(self, request):
        try:
            self._check(request)
            if request.args.get(b"thread") or request.args.get(b"block") or request.args.get(b"mutex"):
                raise KMSError(501, "thread, block and mutex profiles are not supported: use cpu and heap")
            cpu, heap = _flag(request, b"cpu"), _flag(request, b"heap")
            self._profiler.start(cpu, heap)
        except KMSError as e:
            return send_error(request, e)
        log.info("profiling started (cpu={cpu}, heap={heap})", cpu=cpu, heap=heap)
        return send_ok(request, b"", b"application/json")

    def render_GET(self, request):
        try:
            self._check(request)
        except KMSError as e:
            return send_error(request, e)
        return send_message(request, self._profiler.status())

    def render_DELETE(self, request):
        try:
            self._check(request)
            archive = self._profiler.stop()
        except KMSError as e:
            return send_error(request, e)
        log.info("profiling stopped: {size} bytes of profiles", size=len(archive))
        return send_ok(request, archive, b"application/x-tar")
