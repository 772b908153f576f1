"""
Start-up and compaction stream C{kms.db}: recovery reads it in bounded
chunks and compaction writes it in bounded pieces, and both give the same
state as the whole file would.
"""

import os
import random

from twisted.trial.unittest import TestCase

from minkms.hsm import SoftHSM
from minkms.raft.types import Entry, HardState, SnapshotMeta
from minkms.storage import layout, window
from minkms.storage.files import OSFiles
from minkms.storage.layout import FRAME_OVERHEAD, MARKER, RecordSealer, encode_header, new_header
from minkms.storage.records import Snapshot, record_size
from minkms.storage.recovery import scan
from minkms.storage.replay import replay
from minkms.storage.startup import load_volume
from minkms.storage.volume import InlineRunner, open_volume_now
from minkms.storage.window import FileWindow

HSM = SoftHSM(b"s" * 32)


class CountingFiles(OSFiles):
    """The real file layer, noting the size of every read and write."""

    def __init__(self) -> None:
        self.reads: list[int] = []
        self.writes: list[int] = []

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        self.reads.append(length)
        return super().pread(fd, length, offset)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        self.writes.append(len(data))
        super().pwrite(fd, data, offset)


def records():
    """A log as a busy node writes it: entries, hard states, snapshots of growing size."""
    rng = random.Random(7)
    out = []
    for i in range(1, 401):
        out.append(Entry(i, 1 + i // 100, 0, rng.randbytes(rng.randrange(0, 900))))
        if i % 25 == 0:
            out.append(HardState(1 + i // 100, 0, i))
        if i % 100 == 0:
            out.append(Snapshot(SnapshotMeta(i - 10, 1 + i // 100, b"members"), rng.randbytes(i * 100)))
    return out


class FileWindowTests(TestCase):
    """A L{FileWindow} answers slices and find() as the file's bytes do."""

    def test_same_answers_as_bytes(self):
        rng = random.Random(3)
        data = bytearray(rng.randbytes(5000))
        for at in rng.sample(range(len(data) - 4), 40):
            data[at : at + 4] = MARKER
        data = bytes(data)
        path = os.path.join(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        for chunk in (16, 17, 100, 1024, 10000):
            view = FileWindow(OSFiles(), fd, len(data), chunk)
            self.assertEqual(len(view), len(data))
            for _ in range(300):
                start = rng.randrange(-10, len(data) + 10)
                stop = start + rng.randrange(0, 3 * chunk)
                self.assertEqual(view[start:stop], data[start:stop], (chunk, start, stop))
                at = max(start, 0)
                self.assertEqual(view.find(MARKER, at), data.find(MARKER, at), (chunk, at))
            self.assertEqual(view[:], data)


class StreamingTests(TestCase):
    """Recovery and compaction of a volume many chunks long."""

    CHUNK = 4096
    PIECE = 8192

    def setUp(self):
        self.patch(window, "CHUNK_SIZE", self.CHUNK)
        self.patch(layout, "PIECE_SIZE", self.PIECE)
        self.path = os.path.join(self.mktemp(), "volume")
        volume = open_volume_now(self.path, HSM, runner=InlineRunner())
        self.records = records()
        for start in range(0, len(self.records), 7):
            self.successResultOf(volume.append(self.records[start : start + 7]))
        self.size = volume.size
        volume.close()
        self.largest = max(FRAME_OVERHEAD + record_size(r) for r in self.records)

    def recover(self):
        files = CountingFiles()
        loaded = load_volume(self.path, HSM, files)
        os.close(loaded.fd)
        os.close(loaded.lock_fd)
        return loaded, files

    def test_recovery_reads_in_chunks(self):
        """
        Recovery reads the file front to back in chunks (only a frame larger
        than a chunk in one read), about once, and gets the whole state.
        """
        self.assertGreater(self.size, 20 * self.CHUNK)
        loaded, files = self.recover()
        self.assertEqual(loaded.state, replay(self.records))
        self.assertEqual(loaded.end, self.size)
        self.assertLessEqual(max(files.reads), max(self.CHUNK, self.largest))
        self.assertLess(max(files.reads), self.size // 5)
        self.assertLess(sum(files.reads), 2 * self.size)

    def test_torn_tail_found_in_chunks(self):
        """A torn last write is cut as before when the file is read in chunks."""
        with open(os.path.join(self.path, "kms.db"), "ab") as f:
            f.write(MARKER + b"\x00" * 30)
        loaded, _ = self.recover()
        self.assertEqual(loaded.state, replay(self.records))
        self.assertEqual(loaded.end, self.size)
        self.assertEqual(os.path.getsize(os.path.join(self.path, "kms.db")), self.size)

    def test_compaction_writes_in_pieces(self):
        """
        Compaction writes the new file in pieces no larger than a piece
        plus one small frame, even for a snapshot many pieces long, and the
        new file recovers to the same state.
        """
        state = replay(self.records)
        self.assertGreater(len(state.snapshot.data), 3 * self.PIECE)
        files = CountingFiles()
        volume = open_volume_now(self.path, HSM, files=files, runner=InlineRunner())
        files.writes.clear()
        self.successResultOf(volume.compact())
        compacted = volume.size
        volume.close()
        self.assertGreater(len(files.writes), 3)
        self.assertLessEqual(max(files.writes), 2 * self.PIECE)
        self.assertLess(compacted, self.size)
        loaded, _ = self.recover()
        self.assertEqual(loaded.state, state)
        self.assertEqual(loaded.end, compacted)
        self.assertEqual(os.path.getsize(os.path.join(self.path, "kms.db")), compacted)


class SealedInPiecesTests(TestCase):
    """A frame sealed in pieces is the frame sealed whole, to every reader."""

    def test_same_records_any_piece_size(self):
        rek = os.urandom(32)
        header = new_header(HSM, rek, "cluster", 0)
        head = encode_header(header)
        sealer = RecordSealer(rek, header.file_id)
        log = records()
        for piece_size in (64, 1000, 50_000, 10**7):
            data = bytearray()
            for offset, piece in sealer.file_pieces(head, log, piece_size):
                if len(data) < offset + len(piece):
                    data.extend(bytes(offset + len(piece) - len(data)))
                data[offset : offset + len(piece)] = piece
            result = scan(bytes(data), len(head), sealer)
            self.assertIsNone(result.torn)
            self.assertEqual([frame.record for frame in result.frames], log)
            self.assertEqual({frame.batch_start for frame in result.frames}, {len(head)})
