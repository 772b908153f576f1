"""
Opening a volume directory: lock it, create or recover C{kms.db}.

Blocking and free of Twisted, so the volume can run it in its storage
thread, and C{twistd} start-up or a CLI command can run it directly.  Every
reason not to start is a one-line L{StartupError}.
"""

import os
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from minkms.errors import KMSError, StartupError
from minkms.hsm import unseal_error_text
from minkms.storage.errors import CorruptVolume
from minkms.storage.files import Files, OSFiles, commit_temp, temp_path, write_temp
from minkms.storage.layout import (
    REK_SIZE,
    Header,
    RecordSealer,
    decode_header,
    encode_header,
    new_header,
    rek_associated_data,
)
from minkms.storage.recovery import ScanResult, scan_each
from minkms.storage.replay import DurableState, replay
from minkms.storage.window import FileWindow

if TYPE_CHECKING:
    from minkms.hsm import SoftHSM
    from minkms.storage.records import Record

Founding = Callable[[str], "Sequence[Record]"]
"""C{founding(cluster_id)}: the records that found a new cluster."""

DB_NAME = "kms.db"
LOCK_NAME = ".lock"


@attrs.define
class LoadedVolume:
    """
    A locked, recovered volume, ready for writes at C{end}.

    @ivar warnings: one line per thing recovery fixed (a cut torn tail, a
        removed unfinished compaction), for the caller to log.
    """

    directory: str
    db_path: str
    lock_fd: int
    fd: int
    header: Header
    rek: bytes
    state: DurableState
    end: int
    created: bool
    warnings: list[str]


def load_volume(
    directory: str, hsm: "SoftHSM", files: Files | None = None, founding: Founding | None = None
) -> LoadedVolume:
    """
    Lock C{directory} and open C{directory/kms.db}, creating both on first
    start (new REK, new random cluster ID, node ID 0).

    @param founding: C{founding(cluster_id)} gives the records that found a
        single-node cluster.  With it, a new C{kms.db} holds them from the
        moment it exists (creating the volume and founding the cluster are
        one step), and a C{kms.db} left half-made (node 0, no record) by an
        earlier start is completed with them.

    @raise StartupError: volume in use, not writable, damaged, or the HSM
        cannot unseal the REK (exactly C{"failed to unseal root encryption
        key with HSM: invalid ciphertext"} for a wrong key).
    """
    files = files or OSFiles()
    directory = os.path.abspath(directory)
    try:
        files.makedirs(directory)
    except OSError as e:
        raise StartupError(f"volume {directory} cannot be created: {e.strerror}") from None
    try:
        lock_fd = files.open_lock(os.path.join(directory, LOCK_NAME))
    except BlockingIOError:
        raise StartupError(f"volume {directory} is in use by another minkms process") from None
    except OSError as e:
        raise StartupError(f"volume {directory} is not writable: {e.strerror}") from None
    try:
        return _load_locked(directory, hsm, files, lock_fd, founding)
    except BaseException:
        files.close(lock_fd)
        raise


def _load_locked(directory: str, hsm: "SoftHSM", files: Files, lock_fd: int, founding: Founding | None) -> LoadedVolume:
    db_path = os.path.join(directory, DB_NAME)
    warnings = []
    try:
        if files.exists(temp_path(db_path)):
            files.remove(temp_path(db_path))
            files.sync_dir(directory)
            warnings.append(f"removed {temp_path(db_path)} left by an unfinished rewrite")
        if not files.exists(db_path):
            return _create(directory, db_path, hsm, files, lock_fd, warnings, founding)
        fd = files.open_rw(db_path)
    except OSError as e:
        raise StartupError(f"volume {directory} is not writable: {e.strerror}") from None
    try:
        header, rek, state, result = _recover(db_path, hsm, files, fd)
    except BaseException:
        files.close(fd)
        raise
    if result.torn is not None:
        torn = result.torn
        try:
            files.truncate(fd, result.end)
            files.sync(fd)
        except OSError as e:
            files.close(fd)
            raise StartupError(f"{db_path}: cannot cut torn tail at offset {torn.offset}: {e.strerror}") from None
        warnings.append(
            f"{db_path}: cut {torn.length} bytes of an unfinished write at offset {torn.offset} ({torn.reason})"
        )
    end = result.end
    if founding is not None and _half_made(header, state):
        records = founding(header.cluster_id)
        try:
            data = RecordSealer(rek, header.file_id).encode_batch(end, records)
            files.pwrite(fd, data, end)
            files.sync(fd)
        except OSError as e:
            files.close(fd)
            raise StartupError(f"volume {directory} is not writable: {e.strerror}") from None
        end += len(data)
        state = replay(records)
        warnings.append(f"{db_path}: founded the single-node cluster an earlier start left unfounded")
    return LoadedVolume(directory, db_path, lock_fd, fd, header, rek, state, end, False, warnings)


def _recover(db_path: str, hsm: "SoftHSM", files: Files, fd: int) -> tuple[Header, bytes, DurableState, ScanResult]:
    """
    Read C{kms.db} front to back in chunks (L{FileWindow}), folding each
    good record into the durable state as it is read.

    @return: the header, the REK, the state and the L{ScanResult}.
    """
    try:
        data = FileWindow(files, fd, files.size(fd))
        header, start = decode_header(data)
    except OSError as e:
        raise StartupError(f"{db_path}: cannot read: {e.strerror or e}") from None
    except CorruptVolume as e:
        raise _corrupt(db_path, e) from None
    try:
        rek = hsm.unseal(
            header.sealed_rek,
            rek_associated_data(header.file_id, header.cluster_id, header.node_id),
        )
    except KMSError as e:
        raise StartupError(unseal_error_text(e)) from None
    if len(rek) != REK_SIZE:
        raise StartupError(f"{db_path}: sealed root encryption key has the wrong size")
    state = DurableState()
    sealer = RecordSealer(rek, header.file_id)
    try:
        result = scan_each(data, start, sealer, lambda frame: state.apply(frame.record))
    except OSError as e:
        raise StartupError(f"{db_path}: cannot read: {e.strerror or e}") from None
    except CorruptVolume as e:
        raise _corrupt(db_path, e) from None
    return header, rek, state, result


def _half_made(header: Header, state: DurableState) -> bool:
    """
    A C{kms.db} with a header of node 0 and no record: made by a start
    that stopped before founding its cluster.  (A joining node also waits
    with no record, but under the ID the cluster gave it, never 0.)
    """
    return header.node_id == 0 and state.snapshot is None and not state.entries


def _create(
    directory: str,
    db_path: str,
    hsm: "SoftHSM",
    files: Files,
    lock_fd: int,
    warnings: list[str],
    founding: Founding | None,
) -> LoadedVolume:
    rek = os.urandom(REK_SIZE)
    header = new_header(hsm, rek, str(uuid.uuid4()), 0)
    data = encode_header(header)
    records = founding(header.cluster_id) if founding is not None else []
    data += RecordSealer(rek, header.file_id).encode_batch(len(data), records)
    fd = write_temp(files, db_path, data)
    try:
        commit_temp(files, directory, db_path)
    except BaseException:
        files.close(fd)
        raise
    return LoadedVolume(directory, db_path, lock_fd, fd, header, rek, replay(records), len(data), True, warnings)


def _corrupt(db_path: str, error: CorruptVolume) -> StartupError:
    return StartupError(
        f"{db_path}: {error.reason} at offset {error.offset}; refusing to start "
        "(no repair attempted: restore a backup or re-join the cluster)"
    )
