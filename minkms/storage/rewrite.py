"""
Writing a whole new C{kms.db} next to the old one, in slices.

Blocking file work for the storage thread, free of Twisted: the volume
decides when each step runs, and between two slices it may append to the
old file, so that a compaction does not hold writes for the time it takes
to write the whole state.

The new file is the header, the state the volume held when the rewrite
began (one batch), then the records appended to the old file since (a
second batch).  It is fsynced and only then renamed over the old file, so
a crash at any point leaves the old file or the new one, each whole and
each holding every record that was acknowledged.
"""

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs

from minkms.storage.errors import CompactionAborted, StorageFailed, reason_of
from minkms.storage.files import Files, commit_temp, temp_path
from minkms.storage.layout import Header, RecordSealer, encode_header, new_header, sealed_size
from minkms.storage.records import Record

if TYPE_CHECKING:
    from minkms.hsm import SoftHSM


@attrs.define
class NewFile:
    """
    A new C{kms.db} under way at its temporary path.

    @ivar end: where the state (the first batch) ends; records appended
        meanwhile follow there.
    """

    header: Header
    sealer: RecordSealer
    fd: int
    pieces: Iterator[tuple[int, bytes]]
    end: int


def begin(
    files: Files, hsm: "SoftHSM", rek: bytes, db_path: str, records: list[Record], cluster_id: str, node_id: int
) -> NewFile:
    """
    Create the temporary file for a new C{kms.db} holding C{records}, under
    a new header; nothing is written yet.

    @raise CompactionAborted: the file could not be created.
    """
    try:
        header = new_header(hsm, rek, cluster_id, node_id)
        head = encode_header(header)
        sealer = RecordSealer(rek, header.file_id)
        fd = files.create(temp_path(db_path))
    except Exception as e:
        raise _aborted(db_path, e) from e
    with _aborting(files, db_path, fd):
        end = len(head) + sealed_size(records)
        return NewFile(header, sealer, fd, sealer.file_pieces(head, records), end)


def write_slice(files: Files, db_path: str, new: NewFile, budget: int) -> bool:
    """
    Write the next pieces of C{new}'s state, at least C{budget} bytes of
    them unless fewer are left.  A slice
    that leaves more to write is fsynced, so that the last fsync, which
    queued appends wait for, has one slice to flush rather than the
    whole file.

    @return: whether the whole state is written.
    @raise CompactionAborted: a write failed; the temporary file is gone.
    """
    written = 0
    with _aborting(files, db_path, new.fd):
        for offset, piece in new.pieces:
            files.pwrite(new.fd, piece, offset)
            written += len(piece)
            if written >= budget:
                files.sync(new.fd)
                return False
    return True


def abandon(files: Files, db_path: str, new: NewFile) -> None:
    """Close and remove C{new}'s temporary file: the old file stays."""
    _discard(files, db_path, new.fd)


def finish(files: Files, directory: str, db_path: str, new: NewFile, tail: list[Record], old_fd: int) -> int:
    """
    Append C{tail} (the records appended to the old file since the state
    was taken) as the new file's second batch, fsync it, rename it over
    C{db_path}, fsync C{directory}, and close the old file.

    @return: the new file's size.
    @raise CompactionAborted: before the rename; the old file stays in use.
    @raise StorageFailed: the rename or the directory fsync failed: which
        file a restart finds is unknown, so the volume must stop.
    """
    with _aborting(files, db_path, new.fd):
        data = new.sealer.encode_batch(new.end, tail)
        if data:
            files.pwrite(new.fd, data, new.end)
        files.sync(new.fd)
    try:
        commit_temp(files, directory, db_path)
    except Exception as e:
        _close_quietly(files, new.fd)
        raise StorageFailed(f"storage failed: cannot replace {db_path}: {reason_of(e)}") from e
    _close_quietly(files, old_fd)
    return new.end + len(data)


@contextlib.contextmanager
def _aborting(files: Files, db_path: str, fd: int) -> Iterator[None]:
    """
    On any failure inside, close and remove the temporary file; an error
    goes on as L{CompactionAborted}, and the old file stays in use.
    """
    try:
        yield
    except BaseException as e:
        _discard(files, db_path, fd)
        if not isinstance(e, Exception):
            raise
        raise _aborted(db_path, e) from e


def _aborted(db_path: str, error: Exception) -> CompactionAborted:
    return CompactionAborted(f"cannot write new {db_path}: {reason_of(error)}")


def _discard(files: Files, db_path: str, fd: int) -> None:
    _close_quietly(files, fd)
    try:
        files.remove(temp_path(db_path))
    except Exception:
        pass


def _close_quietly(files: Files, fd: int) -> None:
    try:
        files.close(fd)
    except Exception:
        pass
