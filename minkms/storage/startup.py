"""
Opening a volume directory: lock it, create or recover C{kms.db}.

Blocking and free of Twisted, so the volume can run it in its storage
thread, and C{twistd} start-up or a CLI command can run it directly.  Every
reason not to start is a one-line L{StartupError}.
"""

import os
import uuid

import attrs

from minkms.errors import KMSError, StartupError
from minkms.hsm import unseal_error_text
from minkms.storage.errors import CorruptVolume
from minkms.storage.files import OSFiles, commit_temp, temp_path, write_temp
from minkms.storage.layout import (
    REK_SIZE,
    Header,
    RecordSealer,
    decode_header,
    encode_header,
    new_header,
    rek_associated_data,
)
from minkms.storage.recovery import scan
from minkms.storage.replay import DurableState, replay

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


def load_volume(directory: str, hsm, files=None) -> LoadedVolume:
    """
    Lock C{directory} and open C{directory/kms.db}, creating both on first
    start (new REK, new random cluster ID, node ID 0).

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
        raise StartupError(
            f"volume {directory} is in use by another minkms process"
        ) from None
    except OSError as e:
        raise StartupError(f"volume {directory} is not writable: {e.strerror}") from None
    try:
        return _load_locked(directory, hsm, files, lock_fd)
    except BaseException:
        files.close(lock_fd)
        raise


def _load_locked(directory: str, hsm, files, lock_fd: int) -> LoadedVolume:
    db_path = os.path.join(directory, DB_NAME)
    warnings = []
    try:
        if files.exists(temp_path(db_path)):
            files.remove(temp_path(db_path))
            files.sync_dir(directory)
            warnings.append(f"removed {temp_path(db_path)} left by an unfinished rewrite")
        if not files.exists(db_path):
            return _create(directory, db_path, hsm, files, lock_fd, warnings)
        data = files.read(db_path)
    except OSError as e:
        raise StartupError(f"volume {directory} is not writable: {e.strerror}") from None
    try:
        header, start = decode_header(data)
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
    try:
        result = scan(data, start, RecordSealer(rek, header.file_id))
    except CorruptVolume as e:
        raise _corrupt(db_path, e) from None
    state = replay(frame.record for frame in result.frames)
    try:
        fd = files.open_rw(db_path)
    except OSError as e:
        raise StartupError(f"volume {directory} is not writable: {e.strerror}") from None
    if result.torn is not None:
        torn = result.torn
        try:
            files.truncate(fd, result.end)
            files.sync(fd)
        except OSError as e:
            files.close(fd)
            raise StartupError(
                f"{db_path}: cannot cut torn tail at offset {torn.offset}: {e.strerror}"
            ) from None
        warnings.append(
            f"{db_path}: cut {torn.length} bytes of an unfinished write at offset "
            f"{torn.offset} ({torn.reason})"
        )
    return LoadedVolume(
        directory, db_path, lock_fd, fd, header, rek, state, result.end, False, warnings
    )


def _create(directory, db_path, hsm, files, lock_fd, warnings) -> LoadedVolume:
    rek = os.urandom(REK_SIZE)
    header = new_header(hsm, rek, str(uuid.uuid4()), 0)
    data = encode_header(header)
    fd = write_temp(files, db_path, data)
    try:
        commit_temp(files, directory, db_path)
    except BaseException:
        files.close(fd)
        raise
    return LoadedVolume(
        directory, db_path, lock_fd, fd, header, rek, DurableState(), len(data), True, warnings
    )


def _corrupt(db_path: str, error: CorruptVolume) -> StartupError:
    return StartupError(
        f"{db_path}: {error.reason} at offset {error.offset}; refusing to start "
        "(no repair attempted: restore a backup or re-join the cluster)"
    )
