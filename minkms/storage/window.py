"""
A bytes-like view of an open file, read in bounded chunks.

Recovery (L{minkms.storage.recovery}) reads C{kms.db} with C{len}, slices
and C{find}, as on the bytes of the whole file.  L{FileWindow} answers the
same calls through the file layer's C{pread}, keeping one chunk at a time,
so that start-up memory does not grow with the file: a frame is read once,
and only a frame larger than a chunk (a big snapshot) is held whole.
No Twisted: recovery runs it in whichever thread opens the volume.
"""

from typing import Protocol

from minkms.storage.files import Files

CHUNK_SIZE = 2**20
"""Bytes read at a time while scanning."""


class FileData(Protocol):
    """
    What recovery reads a file through: its bytes, or a L{FileWindow} on it
    (C{len}, contiguous slices and C{find}).
    """

    def __len__(self) -> int: ...
    def __getitem__(self, key: slice, /) -> bytes: ...
    def find(self, sub: bytes, start: int = ..., /) -> int: ...


class FileWindow:
    """
    The content of file descriptor C{fd} (of C{size} bytes, not changing
    while the window is used) as L{len}, slicing and L{find}.
    """

    def __init__(self, files: Files, fd: int, size: int, chunk: int | None = None) -> None:
        self._files = files
        self._fd = fd
        self._size = size
        self._chunk = max(chunk or CHUNK_SIZE, 16)
        self._start = 0
        self._buffer = b""

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a file window takes contiguous slices only")
        start, stop, _ = key.indices(self._size)
        if stop <= start:
            return b""
        offset = start - self._start
        if offset >= 0 and stop - self._start <= len(self._buffer):
            return self._buffer[offset : stop - self._start]
        if stop - start > self._chunk:
            return self._read(start, stop - start)
        self._start = start
        self._buffer = self._read(start, min(self._chunk, self._size - start))
        return self._buffer[: stop - start]

    def find(self, sub: bytes, start: int = 0) -> int:
        """The lowest offset at or after C{start} where C{sub} begins, or -1."""
        overlap = len(sub) - 1
        pos = max(start, 0)
        while pos < self._size:
            block = self[pos : pos + self._chunk]
            found = block.find(sub)
            if found >= 0:
                return pos + found
            if pos + len(block) >= self._size:
                return -1
            pos += len(block) - overlap
        return -1

    def _read(self, offset: int, length: int) -> bytes:
        data = self._files.pread(self._fd, length, offset)
        if len(data) != length:
            raise OSError(f"file shrank while being read (at offset {offset})")
        return data
