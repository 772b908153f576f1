"""
Reading C{kms.db} back after a crash: which bad bytes are a torn tail.

Pure.  L{scan} walks the frames after the header (layout in
L{minkms.storage.layout}) of the file's bytes, or of a
L{minkms.storage.window.FileWindow} that reads them in chunks;
L{scan_each} hands each good frame on as it is read rather than keeping
them all, so that recovery holds one frame at a time.  It stops at the first frame that is not good, at
offset p, and must decide between two causes:

  - an unfinished write: the process or machine died during the last
    write, so that write reached the disk only in part.  The volume cuts
    the file at p and carries on; nothing cut was ever acknowledged, because
    an append is acknowledged only after its write and fsync returned.
  - damage: a bit flip, a misdirected or lost write, a wrong key, bytes
    moved or replayed.  The node must not start (no repair): silently
    dropping acknowledged records is how a node forgets votes or acks.

The writer gives the scan two facts to decide with.  Every write (one group
commit) is followed by an fsync before the next write starts, and every
frame records the offset where its write began (its batch start).  So only
the last write can be partial, and a good frame from any later write proves
that everything before it was already durable.

The rule, with p the first frame that is not good:

  1. A frame whose checksums hold but which fails authentication or
     decoding is damage, wherever it is: a write cut short cannot produce a
     matching CRC-32 over bytes it never wrote (this also catches a wrong
     REK and frames copied from another offset or file).
  2. Bad bytes are only ever torn if they fail a checksum or stop at the end
     of the file (short header, short payload).
  3. Search the rest of the file for good frames (by marker; the frame
     header's own CRC makes a false match negligible).  If one belongs to a
     write other than the one p is part of, that write came later, so p was
     durable: damage.  p is part of the write of the last good frame before
     it, or starts a new write at p; those are the only batch starts
     allowed.  This is what catches a bit flip in the length of a middle
     record: the claimed length runs past the end of the file like a short
     payload would, but the frames after it belong to later writes (and
     the length is under the frame header's CRC anyway).
  4. If nothing good follows p, p is the torn tail.
  5. If good frames of the same last write follow p, the write landed out
     of order (page writeback is not sequential).  Accept that only when
     the bad range shows the footprint of never-written blocks: a
     512-byte-aligned sector slice of at least 16 bytes that is all zero.
     Otherwise it is damage.

Limits, stated plainly: a byte flipped inside the very last write, with no
good frame after it, is indistinguishable from a torn write and is cut as
one (the record may have been acknowledged; Raft then has to re-replicate
it).  A truncated file looks like a torn write.  A last write that lost only
a sector slice under 16 bytes while later frames of it survived is reported
as damage rather than repaired.
"""

from collections.abc import Callable, Iterator

import attrs

from minkms.storage.errors import CorruptVolume
from minkms.storage.layout import MARKER, Frame, RecordSealer, Unfinished
from minkms.storage.window import FileData

SECTOR_SIZE = 512
MIN_HOLE = 16


@attrs.frozen
class TornTail:
    """The unfinished last write that recovery cuts off."""

    offset: int
    length: int
    reason: str


@attrs.frozen
class ScanResult:
    """
    The good frames in file order, where the good data ends, and the torn
    tail after it if there was one.
    """

    frames: tuple[Frame, ...]
    end: int
    torn: TornTail | None


def scan(data: FileData, start: int, sealer: RecordSealer) -> ScanResult:
    """
    Read every frame of C{data} (a whole file) from C{start}, the end of
    its header.

    @raise CorruptVolume: damage, with the offset of the first bad frame.
    """
    frames: list[Frame] = []
    result = scan_each(data, start, sealer, frames.append)
    return attrs.evolve(result, frames=tuple(frames))


def scan_each(data: FileData, start: int, sealer: RecordSealer, on_frame: Callable[[Frame], object]) -> ScanResult:
    """
    L{scan}, calling C{on_frame(frame)} for each good frame in file order
    instead of keeping them (the result's C{frames} is empty).  A frame
    handed on may still be followed by damage that raises.
    """
    pos = start
    batch = pos
    while pos < len(data):
        got = sealer.read(data, pos)
        if isinstance(got, Unfinished):
            _check_torn(data, got, batch, sealer)
            torn = TornTail(pos, len(data) - pos, got.reason)
            return ScanResult((), pos, torn)
        if got.batch_start not in (pos, batch):
            raise CorruptVolume(pos, "record batch start does not match its neighbours")
        batch = got.batch_start
        on_frame(got)
        pos = got.end
    return ScanResult((), pos, None)


def _check_torn(data: FileData, bad: Unfinished, batch: int, sealer: RecordSealer) -> None:
    in_flight = (batch, bad.offset)
    first_after = None
    for frame in _good_frames_after(data, bad.offset + 1, sealer):
        if frame.batch_start not in in_flight:
            raise CorruptVolume(bad.offset, f"{bad.reason}, but records written later follow it")
        if first_after is None:
            first_after = frame
    if first_after is not None and not _has_hole(data, bad.offset, first_after.offset):
        raise CorruptVolume(
            bad.offset,
            f"{bad.reason} inside the last write, with good records after it and no unwritten sector",
        )


def _good_frames_after(data: FileData, cursor: int, sealer: RecordSealer) -> Iterator[Frame]:
    while True:
        found = data.find(MARKER, cursor)
        if found < 0:
            return
        got = sealer.read(data, found)
        if isinstance(got, Frame):
            yield got
            cursor = got.end
        else:
            cursor = found + 1


def _has_hole(data: FileData, start: int, stop: int) -> bool:
    sector = start - start % SECTOR_SIZE
    while sector < stop:
        piece = data[max(start, sector) : min(stop, sector + SECTOR_SIZE)]
        if len(piece) >= MIN_HOLE and not piece.strip(b"\0"):
            return True
        sector += SECTOR_SIZE
    return False
