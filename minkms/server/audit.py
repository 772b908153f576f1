"""
The audit trail writer: one record per API request, appended to the file
named in C{config.yaml} (C{audit: {file: ..., max_size: ...}}).

The reactor thread only queues a dict per request.  A writer thread chains
the records (L{minkms.audit.chain}), writes each batch (what arrives
within L{GATHER} seconds of its first record) with one C{write} and one
C{fsync}, seals the chain with an HMAC record at most every
C{seal_every} seconds while records arrive (and before a rotation or a
stop), and rotates the file to C{FILE.<UTC time>} once it grows past
C{max_size}.  A restarted writer continues the chain from the
file's last record.  Subscribers (C{minkms logs --audit}) get each written
line on the reactor thread.
"""

import glob
import os
import queue
import threading
import time

from twisted.internet import defer, threads
from twisted.logger import Logger

from minkms.audit import chain
from minkms.errors import StartupError

log = Logger()

DEFAULT_MAX_SIZE = 100 << 20
SEAL_EVERY = 1.0
GATHER = 0.01
"""Seconds the writer waits after a record for more to join its batch: one
wake-up, write and fsync per batch instead of per request."""
_STOP = object()


_last_second = [None, ""]


def utc_text(seconds: float) -> str:
    """RFC 3339 UTC time with milliseconds (the date and time formatted once per second)."""
    second = int(seconds // 1)
    if _last_second[0] != second:
        _last_second[:] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_last_second[1]}.{int(seconds % 1 * 1000):03d}Z"


def _last_line(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read()
    except FileNotFoundError:
        return None
    lines = tail.rstrip(b"\n").split(b"\n")
    return lines[-1] if lines and lines[-1] else None


def _newest_rotated(path: str) -> str:
    rotated = glob.glob(glob.escape(path) + ".*")
    return max(rotated, key=os.path.getmtime) if rotated else path


class AuditWriter:
    """
    Appends audit records off the reactor thread (see the module
    docstring).  C{record} is the only method called per request.
    """

    def __init__(
        self,
        path: str,
        seal_key: bytes,
        node: str,
        reactor,
        max_size: int = DEFAULT_MAX_SIZE,
        seal_every: float = SEAL_EVERY,
        gather: float = GATHER,
    ) -> None:
        self.path = os.path.abspath(path)
        self.max_size = max_size
        self._seal_key = seal_key
        self._node = node
        self._reactor = reactor
        self._seal_every = seal_every
        self._gather = gather
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = None
        self._fd = -1
        self._head = chain.ChainHead()
        self.subscribers: set = set()
        self.failed: str | None = None

    def open(self) -> None:
        """
        Open (or create, mode 0600) the file and find where its chain ends.

        @raise StartupError: when the file cannot be opened or written.
        """
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            last = _last_line(self.path) or _last_line(_newest_rotated(self.path))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size
            head = chain.head_after(last) if last else None
            if head is None:
                if last:
                    log.warn("audit file {path} does not end with a record; starting a new chain", path=self.path)
                self._write([chain.link(self._head, self._fields(chain.KIND_START))])
            else:
                self._head = head
        except OSError as e:
            raise StartupError(f"cannot open audit file {self.path}: {e.strerror}") from None

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="minkms-audit", daemon=True)
        self._thread.start()

    def record(self, fields: dict) -> None:
        """Queue one request record (called on the reactor thread); dropped once writing failed."""
        if self.failed is None:
            self._queue.put(fields)

    def stop(self):
        """Seal, flush and close; a Deferred that fires when the thread is done."""
        if self._thread is None:
            return defer.succeed(None)
        self._queue.put(_STOP)
        thread, self._thread = self._thread, None
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), thread.join)

    def _fields(self, kind: str) -> dict:
        return {"kind": kind, "time": utc_text(time.time()), "node": self._node}

    def _run(self) -> None:
        unsealed = 0
        last_seal = time.monotonic()
        stopping = False
        while not stopping:
            timeout = max(0.0, self._seal_every - (time.monotonic() - last_seal)) if unsealed else None
            try:
                items = [self._queue.get(timeout=timeout)]
                time.sleep(self._gather)
            except queue.Empty:
                items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for item in items:
                if item is _STOP:
                    stopping = True
                    continue
                item.setdefault("node", self._node)
                lines.append(chain.link(self._head, item))
            unsealed += len(lines)
            rotate = self._size + sum(map(len, lines)) >= self.max_size
            if unsealed and (stopping or rotate or time.monotonic() - last_seal >= self._seal_every):
                lines.append(chain.link(self._head, self._fields(chain.KIND_SEAL), self._seal_key))
                unsealed, last_seal = 0, time.monotonic()
            try:
                self._write(lines)
                if rotate:
                    self._rotate()
            except OSError as e:
                self._fail(f"cannot write audit file {self.path}: {e.strerror}")
                return
            if lines and self.subscribers:
                self._reactor.callFromThread(self._publish, lines)
        os.close(self._fd)

    def _write(self, lines: list) -> None:
        if not lines or self.failed:
            return
        data = b"".join(lines)
        os.write(self._fd, data)
        os.fsync(self._fd)
        self._size += len(data)

    def _rotate(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = f"{self.path}.{stamp}"
        n = 1
        while os.path.exists(target):
            target = f"{self.path}.{stamp}.{n}"
            n += 1
        os.rename(self.path, target)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = 0
        self._reactor.callFromThread(log.info, "audit file rotated to {target}", target=target)

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self._reactor.callFromThread(log.error, "{reason}; audit records are no longer written", reason=reason)

    def _publish(self, lines: list) -> None:
        for subscriber in list(self.subscribers):
            subscriber(lines)
