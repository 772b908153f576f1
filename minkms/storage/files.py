"""
The blocking file-system operations the volume is built from.

L{OSFiles} is the real thing.  Tests and the simulator pass another object
with the same methods to count fsyncs, fill the disk, or stop the world
half-way through a write.  Nothing here uses Twisted: the volume decides
which thread runs these.
"""

import errno
import fcntl
import os
from collections.abc import Callable, Iterable
from typing import Protocol

FILE_MODE = 0o600
DIR_MODE = 0o700
DSYNC = getattr(os, "RWF_DSYNC", None) if hasattr(os, "pwritev") else None
"""The C{pwritev} flag that makes a write durable as it returns; None where the platform lacks it."""


class Files(Protocol):
    """The file operations the volume needs: L{OSFiles}, or a stand-in of a test or the simulator."""

    def makedirs(self, path: str) -> bool: ...
    def open_lock(self, path: str) -> int: ...
    def exists(self, path: str) -> bool: ...
    def size(self, fd: int) -> int: ...
    def pread(self, fd: int, length: int, offset: int) -> bytes: ...
    def create(self, path: str) -> int: ...
    def open_rw(self, path: str) -> int: ...
    def pwrite(self, fd: int, data: bytes, offset: int) -> None: ...
    def sync(self, fd: int) -> None: ...
    def write_synced(self, fd: int, data: bytes, offset: int) -> None: ...
    def truncate(self, fd: int, size: int) -> None: ...
    def close(self, fd: int) -> None: ...
    def rename(self, source: str, target: str) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def remove(self, path: str) -> None: ...


class OSFiles:
    """File operations on the real file system; every file made is 0600."""

    def makedirs(self, path: str) -> bool:
        """
        Make directory C{path} (mode 0700) if missing, durably.

        @return: whether it was created.
        """
        if os.path.isdir(path):
            return False
        os.makedirs(path, DIR_MODE)
        self.sync_dir(os.path.dirname(path) or ".")
        return True

    def open_lock(self, path: str) -> int:
        """
        Open and exclusively lock C{path} without waiting.

        @raise BlockingIOError: another open file description holds it.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BlockingIOError(e.errno, e.strerror) from None
            raise
        return fd

    def exists(self, path: str) -> bool:
        """Whether C{path} exists."""
        return os.path.exists(path)

    def size(self, fd: int) -> int:
        """The size of the open file C{fd} in bytes."""
        return os.fstat(fd).st_size

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        """Up to C{length} bytes of C{fd} from C{offset}; fewer only at the end of the file."""
        parts = []
        while length > 0:
            data = os.pread(fd, length, offset)
            if not data:
                break
            parts.append(data)
            length -= len(data)
            offset += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def create(self, path: str) -> int:
        """Create or empty C{path} for reading and writing."""
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)

    def open_rw(self, path: str) -> int:
        """Open an existing C{path} for reading and writing."""
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of C{data} at C{offset}, however many calls it takes."""
        _write_all(lambda view, at: os.pwrite(fd, view, at), data, offset)

    def sync(self, fd: int) -> None:
        """Make the data and the size of C{fd} durable."""
        os.fdatasync(fd)

    def write_synced(self, fd: int, data: bytes, offset: int) -> None:
        """
        L{pwrite} then L{sync}: on Linux one system call (C{RWF_DSYNC}),
        so the storage thread gives up and takes back the interpreter lock
        once per append instead of twice.
        """
        if DSYNC is None:
            self.pwrite(fd, data, offset)
            self.sync(fd)
            return
        flag = DSYNC
        _write_all(lambda view, at: os.pwritev(fd, [view], at, flag), data, offset)

    def truncate(self, fd: int, size: int) -> None:
        """Cut C{fd} to C{size} bytes."""
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        """Close C{fd} (releasing a lock held through it)."""
        os.close(fd)

    def rename(self, source: str, target: str) -> None:
        """Atomically replace C{target} with C{source}."""
        os.rename(source, target)

    def sync_dir(self, path: str) -> None:
        """Make the entries of directory C{path} durable (creates, renames)."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, path: str) -> None:
        """Remove C{path} if it exists."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _write_all(write: Callable[[memoryview, int], int], data: bytes, offset: int) -> None:
    """Call C{write(view, offset)} until all of C{data} is written from C{offset} on (writes may be short)."""
    view = memoryview(data)
    while view:
        written = write(view, offset)
        view = view[written:]
        offset += written


def temp_path(target: str) -> str:
    """Where a whole new version of C{target} is written before the rename."""
    return target + ".tmp"


def write_temp(files: Files, target: str, data: bytes | Iterable[tuple[int, bytes]]) -> int:
    """
    Write C{data} to the temporary sibling of C{target} and fsync it.
    C{data} is bytes, or an iterable of C{(offset, bytes)} pieces written
    one at a time (so a large file never has to be in memory whole).

    On failure the temporary file is removed, C{target} is untouched, and
    the error propagates.

    @return: the open descriptor of the temporary file.
    """
    tmp = temp_path(target)
    fd = files.create(tmp)
    try:
        for offset, piece in [(0, data)] if isinstance(data, bytes) else data:
            files.pwrite(fd, piece, offset)
        files.sync(fd)
    except BaseException:
        cleanups: tuple[Callable[[], None], ...] = (lambda: files.close(fd), lambda: files.remove(tmp))
        for cleanup in cleanups:
            try:
                cleanup()
            except Exception:
                pass
        raise
    return fd


def commit_temp(files: Files, directory: str, target: str) -> None:
    """
    Rename the temporary sibling over C{target} and fsync C{directory}.

    A crash at any point leaves either the old or the new C{target} whole.
    """
    files.rename(temp_path(target), target)
    files.sync_dir(directory)
