"""
Errors raised by the storage layer.

The pure modules raise L{CorruptVolume} and L{BackupError}; the volume
turns a corrupt file into a one-line L{minkms.errors.StartupError} naming
the file, and a failed write into L{StorageFailed}, which the server maps to
"unavailable" and reports.
"""


class CorruptVolume(Exception):
    """
    Bytes of C{kms.db} that are neither valid data nor a torn tail.

    @ivar offset: the file offset of the first bad byte range.
    @ivar reason: a short phrase, e.g. C{"record checksum mismatch"}.
    """

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.offset = offset
        self.reason = reason


class StorageFailed(Exception):
    """
    A write could not be made durable; the volume accepts no more writes.

    The message always starts with C{"storage failed: "} so the server can
    show it as is.
    """


class CompactionAborted(Exception):
    """
    A rewrite of C{kms.db} gave up before its rename: the old file is
    whole and still in use, and the volume has not failed.
    """


class BackupError(ValueError):
    """A backup blob cannot be opened: not a backup, damaged, or another HSM key."""


def reason_of(error: Exception) -> str:
    """A file-system error as the short text an operator reads after "cannot write ...: "."""
    if isinstance(error, OSError) and error.strerror:
        return f"[Errno {error.errno}] {error.strerror}"
    return str(error) or type(error).__name__
