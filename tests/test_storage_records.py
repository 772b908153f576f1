"""
Tests for the pure storage modules: record codec, sealed frames and header,
the torn-tail rule, replay and backups.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from minkms.errors import KMSError
from minkms.hsm import SoftHSM
from minkms.raft.types import ENTRY_CONFIG, Entry, HardState, SnapshotMeta
from minkms.storage.backup import backup_cluster_id, open_backup, seal_backup
from minkms.storage.errors import BackupError, CorruptVolume
from minkms.storage.layout import (
    FRAME_HEADER_SIZE,
    Frame,
    RecordSealer,
    Unfinished,
    decode_header,
    encode_header,
    new_header,
    rek_associated_data,
)
from minkms.storage.records import Snapshot, check_record, decode_record, encode_record
from minkms.storage.recovery import scan
from minkms.storage.replay import DurableState, replay

REK = bytes(range(32))
FILE_ID = b"F" * 16

RECORDS = [
    Entry(1, 1),
    Entry(2, 1, ENTRY_CONFIG, b"config"),
    Entry(2**64 - 1, 7, 255, b"\x00" * 300),
    HardState(),
    HardState(5, 0, 4),
    HardState(6, 2**64 - 1, 2**64 - 1),
    Snapshot(SnapshotMeta(0, 0, b""), b""),
    Snapshot(SnapshotMeta(10, 3, b"members"), b"state" * 1000),
]


def build_file(records_by_batch, rek=REK, hsm=None):
    """A kms.db image: a header, then one write per inner list."""
    hsm = hsm or SoftHSM(b"h" * 32)
    header = new_header(hsm, rek, "cluster", 0)
    data = encode_header(header)
    sealer = RecordSealer(rek, header.file_id)
    starts = []
    for batch in records_by_batch:
        starts.append(len(data))
        data += sealer.encode_batch(len(data), batch)
    return data, sealer, starts


class RecordCodecTests(TestCase):
    """Every record kind survives encode then decode unchanged."""

    def test_round_trip(self):
        """decode_record(encode_record(r)) == r for every kind and edge value."""
        for record in RECORDS:
            self.assertEqual(decode_record(encode_record(record)), record)

    def test_vote_for_node_zero_is_not_no_vote(self):
        """Node 0 is a real vote, distinct from None."""
        self.assertNotEqual(encode_record(HardState(1, 0, 0)), encode_record(HardState(1, None, 0)))

    def test_check_record_refuses_bad_input(self):
        """Malformed records are refused before they reach the disk path."""
        self.assertRaises(TypeError, check_record, "entry")
        self.assertRaises(ValueError, check_record, Entry(-1, 1))
        self.assertRaises(ValueError, check_record, Entry(1, 1, 256))
        self.assertRaises(TypeError, check_record, Entry(1, 1, 0, "text"))
        self.assertRaises(ValueError, check_record, HardState(1, -2, 0))

    def test_check_record_refuses_oversize(self):
        """A record too large for one frame is refused up front."""
        from minkms.storage import records

        self.patch(records, "MAX_PLAINTEXT", 100)
        huge = b"x" * 100
        check_record(Entry(1, 1, 0, b"x" * 50))
        self.assertRaises(ValueError, check_record, Entry(1, 1, 0, huge))
        self.assertRaises(ValueError, check_record, Snapshot(SnapshotMeta(1, 1, b""), huge))


class FrameTests(TestCase):
    """Frames open only with their key, at their offset, in their file."""

    def setUp(self):
        self.sealer = RecordSealer(REK, FILE_ID)

    def place(self, frame, offset):
        """C{frame} at C{offset}, after zero bytes."""
        return b"\x00" * offset + frame

    def test_round_trip(self):
        """A frame read back at its offset gives the record and its end."""
        for record in RECORDS:
            frame = self.sealer.frame(100, 100, encode_record(record))
            got = self.sealer.read(self.place(frame, 100), 100)
            self.assertEqual(got, Frame(100, 100 + len(frame), 100, record))

    def test_other_offset_fails(self):
        """The same bytes at another offset fail authentication."""
        frame = self.sealer.frame(100, 100, encode_record(Entry(1, 1)))
        for offset in (0, 99, 101, 200):
            with self.assertRaises(CorruptVolume) as caught:
                self.sealer.read(self.place(frame, offset), offset)
            self.assertEqual(caught.exception.offset, offset)

    def test_other_file_fails(self):
        """A frame from another file (another file ID, same REK) fails."""
        frame = RecordSealer(REK, b"G" * 16).frame(50, 50, encode_record(Entry(1, 1)))
        self.assertRaises(CorruptVolume, self.sealer.read, self.place(frame, 50), 50)

    def test_wrong_rek_fails(self):
        """A frame sealed under another REK fails."""
        frame = RecordSealer(b"\x01" * 32, FILE_ID).frame(0, 0, encode_record(Entry(1, 1)))
        self.assertRaises(CorruptVolume, self.sealer.read, frame, 0)

    def test_unfinished(self):
        """Short or checksum-failing frames are reported, not raised."""
        frame = self.sealer.frame(0, 0, encode_record(Entry(1, 1, 0, b"abc")))
        for cut in range(len(frame)):
            self.assertIsInstance(self.sealer.read(frame[:cut], 0), Unfinished)
        for i in range(len(frame)):
            damaged = bytearray(frame)
            damaged[i] ^= 0x01
            self.assertIsInstance(self.sealer.read(bytes(damaged), 0), Unfinished)

    def test_checksums_good_but_tag_bad(self):
        """A frame re-checksummed after tampering is damage, not a torn write."""
        import struct
        import zlib

        frame = bytearray(self.sealer.frame(0, 0, encode_record(Entry(1, 1))))
        frame[-1] ^= 1
        payload_crc = zlib.crc32(bytes(frame[FRAME_HEADER_SIZE:]))
        frame[16:20] = struct.pack(">I", payload_crc)
        frame[20:24] = struct.pack(">I", zlib.crc32(bytes(frame[:20])))
        self.assertRaises(CorruptVolume, self.sealer.read, bytes(frame), 0)


class HeaderTests(TestCase):
    """The header carries the IDs and the sealed REK, under a checksum."""

    def test_round_trip(self):
        """decode_header(encode_header(h)) == h, and the REK unseals."""
        hsm = SoftHSM.generate()
        header = new_header(hsm, REK, "0b6d2f2e-5c1c-4c8e-9a57-0d3a1c1d2e3f", 3)
        data = encode_header(header)
        self.assertEqual(decode_header(data + b"rest"), (header, len(data)))
        aad = rek_associated_data(header.file_id, header.cluster_id, header.node_id)
        self.assertEqual(hsm.unseal(header.sealed_rek, aad), REK)

    def test_rek_bound_to_fields(self):
        """The sealed REK does not unseal for other header fields."""
        hsm = SoftHSM.generate()
        header = new_header(hsm, REK, "c", 3)
        for aad in (
            rek_associated_data(header.file_id, "c", 4),
            rek_associated_data(header.file_id, "d", 3),
            rek_associated_data(b"x" * 16, "c", 3),
        ):
            self.assertRaises(KMSError, hsm.unseal, header.sealed_rek, aad)

    def test_every_header_byte_is_checked(self):
        """Flipping any header byte is reported as damage at a header offset."""
        data = encode_header(new_header(SoftHSM.generate(), REK, "c", 0))
        for i in range(len(data)):
            damaged = bytearray(data)
            damaged[i] ^= 0x01
            with self.assertRaises(CorruptVolume) as caught:
                decode_header(bytes(damaged))
            self.assertIn(caught.exception.offset, (0, 8))

    def test_not_a_volume(self):
        """Empty or foreign files are refused."""
        for data in (b"", b"SQLite format 3\x00", b"MINKMS"):
            self.assertRaises(CorruptVolume, decode_header, data)


class ScanTests(TestCase):
    """The torn-tail rule of L{minkms.storage.recovery}."""

    def test_clean_file(self):
        """Every record comes back in order, no torn tail."""
        batches = [[Entry(1, 1)], [Entry(2, 1), HardState(1, 0, 1)], [Entry(3, 1)]]
        data, sealer, _ = build_file(batches)
        result = scan(data, decode_header(data)[1], sealer)
        self.assertIsNone(result.torn)
        self.assertEqual(result.end, len(data))
        self.assertEqual([f.record for f in result.frames], [r for b in batches for r in b])

    def test_swapped_frames_fail(self):
        """Two equal-sized frames swapped in place are damage."""
        data, sealer, starts = build_file([[Entry(1, 1)], [Entry(2, 1)], [Entry(3, 1)]])
        a, b, c = starts
        swapped = data[:a] + data[b:c] + data[a:b] + data[c:]
        self.assertRaises(CorruptVolume, scan, swapped, a, sealer)

    def test_replayed_frame_fails(self):
        """A frame copied again at the end is damage, not a torn tail."""
        data, sealer, starts = build_file([[Entry(1, 1)], [Entry(2, 1)]])
        with self.assertRaises(CorruptVolume) as caught:
            scan(data + data[starts[1] :], starts[0], sealer)
        self.assertEqual(caught.exception.offset, len(data))

    def test_wrong_rek_everywhere_fails(self):
        """Records under another REK are damage at the first record, not a torn tail."""
        data, _, starts = build_file([[Entry(1, 1)], [Entry(2, 1)]])
        header = decode_header(data)[0]
        other = RecordSealer(b"\x02" * 32, header.file_id)
        with self.assertRaises(CorruptVolume) as caught:
            scan(data, starts[0], other)
        self.assertEqual(caught.exception.offset, starts[0])

    def test_bad_length_in_middle_record(self):
        """A flipped length bit in a middle frame is damage even though it runs past EOF."""
        data, sealer, starts = build_file([[Entry(i, 1)] for i in range(1, 5)])
        damaged = bytearray(data)
        damaged[starts[1] + 4] ^= 0x80
        with self.assertRaises(CorruptVolume) as caught:
            scan(bytes(damaged), starts[0], sealer)
        self.assertEqual(caught.exception.offset, starts[1])

    def test_short_tail_is_torn(self):
        """Every cut inside the last write leaves the records before it."""
        data, sealer, starts = build_file([[Entry(1, 1)], [Entry(2, 1), Entry(3, 1)]])
        last_write = starts[-1]
        boundary = last_write + (len(data) - last_write) // 2
        for cut in range(last_write + 1, len(data)):
            result = scan(data[:cut], starts[0], sealer)
            self.assertEqual(result.end, boundary if cut >= boundary else last_write)
            self.assertEqual(result.torn is None, cut == boundary)

    def test_out_of_order_write_with_hole_is_torn(self):
        """
        The last write landed except for a zeroed sector in its middle
        record: the tail from that record is cut, earlier data kept.
        """
        big = [Entry(i, 1, 0, os.urandom(1500)) for i in (2, 3, 4)]
        data, sealer, starts = build_file([[Entry(1, 1)], big])
        second = starts[1] + (len(data) - starts[1]) // 3
        sector = (second // 512 + 1) * 512
        holed = data[:sector] + bytes(512) + data[sector + 512 :]
        result = scan(holed, starts[0], sealer)
        self.assertEqual([f.record for f in result.frames], [Entry(1, 1), big[0]])
        self.assertEqual(result.torn.offset, second)

    def test_flip_inside_last_write_with_good_records_after(self):
        """A bit flip (no hole) in a non-final record of the last write is damage."""
        big = [Entry(i, 1, 0, os.urandom(1500)) for i in (2, 3, 4)]
        data, sealer, starts = build_file([[Entry(1, 1)], big])
        second = starts[1] + (len(data) - starts[1]) // 3
        damaged = bytearray(data)
        damaged[second + 700] ^= 0x01
        with self.assertRaises(CorruptVolume) as caught:
            scan(bytes(damaged), starts[0], sealer)
        self.assertEqual(caught.exception.offset, second)

    def test_hole_in_older_write_is_damage(self):
        """A zeroed sector in a write followed by later writes is damage."""
        big = [Entry(i, 1, 0, os.urandom(1500)) for i in (2, 3, 4)]
        data, sealer, starts = build_file([[Entry(1, 1)], big, [Entry(5, 1)]])
        sector = (starts[1] // 512 + 2) * 512
        holed = data[:sector] + bytes(512) + data[sector + 512 :]
        self.assertRaises(CorruptVolume, scan, holed, starts[0], sealer)


class ReplayTests(TestCase):
    """Replaying records in order gives the durable Raft state."""

    def test_entry_truncates_conflicting_suffix(self):
        """An entry at index i drops entries at i and later."""
        state = replay([Entry(1, 1), Entry(2, 1), Entry(3, 1), Entry(2, 2)])
        self.assertEqual(state.entries, [Entry(1, 1), Entry(2, 2)])

    def test_snapshot_drops_covered_entries(self):
        """A snapshot drops entries at or below its index, keeps the rest."""
        snap = Snapshot(SnapshotMeta(2, 1, b"c"), b"s")
        state = replay([Entry(1, 1), Entry(2, 1), Entry(3, 1), snap, Entry(4, 1)])
        self.assertEqual(state.snapshot, snap)
        self.assertEqual(state.entries, [Entry(3, 1), Entry(4, 1)])

    def test_latest_hard_state_wins(self):
        """The last hard state replaces earlier ones."""
        self.assertEqual(replay([HardState(1, 0, 0), HardState(2, None, 1)]).hard_state, HardState(2, None, 1))

    def test_records_replay_to_same_state(self):
        """replay(state.records()) == state."""
        state = replay(RECORDS + [Entry(11, 3), Entry(12, 3), HardState(3, 1, 11)])
        self.assertEqual(replay(state.records()), state)
        self.assertEqual(replay(DurableState().records()), DurableState())


class BackupTests(TestCase):
    """Backups open only with the HSM key that sealed them."""

    def test_round_trip(self):
        """open_backup(seal_backup(...)) gives the state back."""
        hsm = SoftHSM.generate()
        blob = seal_backup(hsm, "cluster-1", b"state" * 1000)
        self.assertEqual(open_backup(hsm, blob), b"state" * 1000)
        self.assertEqual(backup_cluster_id(blob), "cluster-1")
        self.assertFalse(blob.startswith(b"{"))

    def test_wrong_key(self):
        """Another HSM key gets a clear error."""
        blob = seal_backup(SoftHSM.generate(), "c", b"state")
        with self.assertRaises(BackupError) as caught:
            open_backup(SoftHSM.generate(), blob)
        self.assertIn("different HSM key", str(caught.exception))

    def test_damage(self):
        """Truncation, a foreign file or any flipped byte is refused."""
        hsm = SoftHSM.generate()
        blob = seal_backup(hsm, "c", b"state")
        self.assertRaises(BackupError, open_backup, hsm, b"{}")
        self.assertRaises(BackupError, open_backup, hsm, blob[:30])
        for i in range(len(blob)):
            damaged = bytearray(blob)
            damaged[i] ^= 0x01
            self.assertRaises(BackupError, open_backup, hsm, bytes(damaged))


class PurityTests(TestCase):
    """The layout, sealing, recovery and backup modules never import Twisted."""

    def test_no_twisted(self):
        """Importing every pure storage module loads no twisted module."""
        code = (
            "import sys\n"
            "import minkms.storage.layout, minkms.storage.records, minkms.storage.recovery\n"
            "import minkms.storage.replay, minkms.storage.backup, minkms.storage.startup\n"
            "import minkms.storage.files, minkms.storage.faults\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "[]")
