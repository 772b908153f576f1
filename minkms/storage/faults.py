"""
A file layer that fails on purpose, for tests and the simulator.

L{FaultyFiles} wraps a real layer (L{minkms.storage.files.OSFiles}) and
records every operation that changes the disk.  It can stop the world at
the n-th such operation, as a crash would: a write lands only in part, a
rename lands or not, and from then on every operation fails.  It can also
make chosen operations raise (a full disk, an fsync error).  The files on
disk after a simulated crash are what recovery must cope with.
"""

import errno
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minkms.storage.files import Files


class SimulatedCrash(Exception):
    """The process "died" at this operation; nothing after it happens."""


def enospc() -> OSError:
    """The error a write gets on a full disk."""
    return OSError(errno.ENOSPC, "No space left on device")


def eio() -> OSError:
    """The error an fsync gets when the device lost the data."""
    return OSError(errno.EIO, "Input/output error")


class FaultyFiles:
    """
    Records, counts and breaks the operations of an inner file layer.

    @ivar ops: the disk-changing operations done so far, as (name, detail).
    @ivar sync_threads: the thread ident of every C{sync} call.
    @ivar crash_at: crash at this index of C{ops} (0-based), or C{None}.
    @ivar cut: for a crash at a C{pwrite}, how many bytes land first.
    @ivar rename_lands: for a crash at a C{rename}, whether it happens first.
    """

    def __init__(self, inner: "Files | None" = None) -> None:
        if inner is None:
            from minkms.storage.files import OSFiles

            inner = OSFiles()
        self.inner: Files = inner
        self.ops: list[tuple[str, object]] = []
        self.sync_threads: list[int] = []
        self.crash_at: int | None = None
        self.cut = 0
        self.rename_lands = False
        self.crashed = False
        self._errors: dict[str, tuple[OSError, int | None]] = {}

    @property
    def syncs(self) -> int:
        """How many file fsyncs were done (directory fsyncs not counted)."""
        return sum(1 for name, _ in self.ops if name == "sync")

    def fail(self, op: str, error: OSError, partial: int | None = None) -> None:
        """
        Make every later call of C{op} raise C{error}; a failing C{pwrite}
        first writes C{partial} bytes if given (a disk filling up mid-write).
        """
        self._errors[op] = (error, partial)

    def heal(self, op: str) -> None:
        """Stop failing C{op}."""
        self._errors.pop(op, None)

    def _enter(self, name: str, detail: object) -> bool:
        if self.crashed:
            raise SimulatedCrash(f"{name} after crash")
        index = len(self.ops)
        self.ops.append((name, detail))
        if self.crash_at is not None and index == self.crash_at:
            self.crashed = True
            return True
        return False

    def _check_error(self, name: str) -> None:
        if name in self._errors:
            raise self._errors[name][0]

    def makedirs(self, path: str) -> bool:
        """As L{OSFiles.makedirs}, but breakable."""
        return self.inner.makedirs(path)

    def open_lock(self, path: str) -> int:
        """As L{OSFiles.open_lock}, but breakable."""
        self._check_error("open_lock")
        return self.inner.open_lock(path)

    def exists(self, path: str) -> bool:
        """As L{OSFiles.exists}, but breakable."""
        return self.inner.exists(path)

    def size(self, fd: int) -> int:
        """As L{OSFiles.size}, but breakable (as C{"read"})."""
        self._check_error("read")
        return self.inner.size(fd)

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        """As L{OSFiles.pread}, but breakable (as C{"read"})."""
        self._check_error("read")
        return self.inner.pread(fd, length, offset)

    def open_rw(self, path: str) -> int:
        """As L{OSFiles.open_rw}, but breakable."""
        self._check_error("open_rw")
        return self.inner.open_rw(path)

    def close(self, fd: int) -> None:
        """As L{OSFiles.close}, but breakable."""
        self.inner.close(fd)

    def create(self, path: str) -> int:
        """As L{OSFiles.create}, but breakable."""
        if self._enter("create", path):
            raise SimulatedCrash("create")
        self._check_error("create")
        return self.inner.create(path)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """As L{OSFiles.pwrite}, but breakable."""
        if self._enter("pwrite", len(data)):
            self.inner.pwrite(fd, data[: self.cut], offset)
            raise SimulatedCrash(f"pwrite cut at {self.cut} of {len(data)}")
        if "pwrite" in self._errors:
            error, partial = self._errors["pwrite"]
            if partial:
                self.inner.pwrite(fd, data[:partial], offset)
            raise error
        self.inner.pwrite(fd, data, offset)

    def sync(self, fd: int) -> None:
        """As L{OSFiles.sync}, but breakable."""
        if self._enter("sync", fd):
            raise SimulatedCrash("sync")
        self.sync_threads.append(threading.get_ident())
        self._check_error("sync")
        self.inner.sync(fd)

    def write_synced(self, fd: int, data: bytes, offset: int) -> None:
        """As L{OSFiles.write_synced}: a breakable L{pwrite}, then a breakable L{sync}."""
        self.pwrite(fd, data, offset)
        self.sync(fd)

    def truncate(self, fd: int, size: int) -> None:
        """As L{OSFiles.truncate}, but breakable."""
        if self._enter("truncate", size):
            raise SimulatedCrash("truncate")
        self._check_error("truncate")
        self.inner.truncate(fd, size)

    def rename(self, source: str, target: str) -> None:
        """As L{OSFiles.rename}, but breakable."""
        if self._enter("rename", target):
            if self.rename_lands:
                self.inner.rename(source, target)
            raise SimulatedCrash("rename")
        self._check_error("rename")
        self.inner.rename(source, target)

    def sync_dir(self, path: str) -> None:
        """As L{OSFiles.sync_dir}, but breakable."""
        if self._enter("sync_dir", path):
            raise SimulatedCrash("sync_dir")
        self._check_error("sync_dir")
        self.inner.sync_dir(path)

    def remove(self, path: str) -> None:
        """As L{OSFiles.remove}, but breakable."""
        if self._enter("remove", path):
            raise SimulatedCrash("remove")
        self._check_error("remove")
        self.inner.remove(path)
