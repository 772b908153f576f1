"""
Crash and corruption tests: after a crash at any step, recovery yields the
acknowledged records (perhaps plus some in flight), and damage is refused.
"""

import itertools
import os
import re
import shutil

from twisted.trial.unittest import TestCase

from minkms.errors import StartupError
from minkms.hsm import SoftHSM
from minkms.raft.types import Entry, HardState, SnapshotMeta
from minkms.storage import layout, volume, window
from minkms.storage.errors import StorageFailed
from minkms.storage.faults import FaultyFiles, SimulatedCrash
from minkms.storage.layout import RecordSealer, decode_header
from minkms.storage.records import Snapshot
from minkms.storage.recovery import scan
from minkms.storage.replay import replay
from minkms.storage.startup import load_volume
from minkms.storage.volume import InlineRunner, StepRunner, open_volume_now

HSM = SoftHSM(b"k" * 32)


def entry(i, term=1, size=20):
    """A log entry whose data is C{size} copies of one byte."""
    return Entry(i, term, 0, bytes([i % 256]) * size)


def recover(path):
    """Start as a restarted node would: the state and the load details."""
    loaded = load_volume(path, HSM)
    os.close(loaded.fd)
    os.close(loaded.lock_fd)
    return loaded


def open_with(path, runner=None):
    """Open C{path} over a fresh L{FaultyFiles}; ops counted from here on."""
    files = FaultyFiles()
    volume = open_volume_now(path, HSM, files=files, runner=runner or InlineRunner())
    del files.ops[:]
    return volume, files


class CrashTestCase(TestCase):
    """A prepared volume to copy for each crash."""

    def make_base(self, batches):
        """A closed volume holding C{batches}, one write each; returns its path."""
        base = os.path.join(self.mktemp(), "base")
        volume = open_volume_now(base, HSM, runner=InlineRunner())
        for batch in batches:
            self.successResultOf(volume.append(batch))
        volume.close()
        self.serial = 0
        return base

    def copy(self, base):
        """A fresh copy of the volume at C{base}."""
        self.serial += 1
        path = os.path.join(os.path.dirname(base), f"run{self.serial}")
        shutil.copytree(base, path)
        return path


class AppendCrashTests(CrashTestCase):
    """A crash anywhere in a group-commit write."""

    ACKED = [[entry(1)], [HardState(1, 0, 1)], [entry(2), entry(3)]]
    IN_FLIGHT = [entry(5), HardState(2, 1, 4), entry(6)]

    def crash_run(self, base, crash_offset, cut=0):
        """
        Append X (acknowledged), then A, B, C as one group commit, with a
        crash at op C{crash_offset} of that commit (0 = its write, 1 = its
        fsync).  Returns the Deferreds' outcomes and the recovered state.
        """
        path = self.copy(base)
        runner = StepRunner()
        volume, files = open_with(path, runner)
        x = volume.append([entry(4)])
        flying = [volume.append([record]) for record in self.IN_FLIGHT]
        runner.step()
        self.successResultOf(x)
        write_size = None
        if crash_offset is not None:
            files.crash_at = len(files.ops) + crash_offset
            files.cut = cut
        runner.step()
        if crash_offset is None:
            write_size = files.ops[-2][1]
            for d in flying:
                self.successResultOf(d)
        else:
            for d in flying:
                self.failureResultOf(d, StorageFailed)
            self.assertTrue(volume.failed.startswith("storage failed: "))
        self.successResultOf(volume.close())
        return path, write_size

    def test_cut_at_every_byte_of_last_write(self):
        """
        Every cut of the in-flight write, and a crash at its fsync, recover
        the acknowledged records plus a prefix of the in-flight ones, and
        the volume takes appends again afterwards.
        """
        base = self.make_base(self.ACKED)
        acked = [r for b in self.ACKED for r in b] + [entry(4)]
        allowed = [replay(acked + self.IN_FLIGHT[:k]) for k in range(len(self.IN_FLIGHT) + 1)]
        full, size = self.crash_run(base, None)
        with open(os.path.join(full, "kms.db"), "rb") as f:
            data = f.read()
        batch_start = len(data) - size
        boundaries = {start - batch_start for start in record_starts(data, recover(full)) + [len(data)]}
        outcomes = set()
        for crash_offset, cut in [(0, c) for c in range(size + 1)] + [(1, 0)]:
            path, _ = self.crash_run(base, crash_offset, cut)
            loaded = recover(path)
            self.assertIn(loaded.state, allowed, f"cut {cut}")
            outcomes.add(allowed.index(loaded.state))
            torn = crash_offset == 0 and cut not in boundaries
            self.assertEqual(len(loaded.warnings), int(torn))
            if torn:
                self.assertIn("unfinished write", loaded.warnings[0])
            volume = open_volume_now(path, HSM, runner=InlineRunner())
            self.successResultOf(volume.append([entry(99)]))
            volume.close()
            self.assertEqual(recover(path).state.entries[-1], entry(99))
        self.assertEqual(outcomes, {0, 1, 2, 3})

    def test_crash_while_cutting_torn_tail(self):
        """A crash while recovery cuts the torn tail: the next start cuts it again."""
        base = self.make_base(self.ACKED)
        path, _ = self.crash_run(base, 0, 10)
        files = FaultyFiles()
        files.crash_at = 0
        self.assertRaises(SimulatedCrash, load_volume, path, HSM, files)
        self.assertEqual(recover(path).state, replay([r for b in self.ACKED for r in b] + [entry(4)]))


class CompactionCrashTests(CrashTestCase):
    """A crash at every step of compaction and of a header rewrite."""

    BATCHES = [[entry(i, size=60) for i in range(n, n + 5)] for n in range(1, 31, 5)] + [
        [Snapshot(SnapshotMeta(20, 1, b"members"), b"state" * 50)],
        [HardState(3, 1, 25)],
    ]
    MIN_WRITES = 1

    def steps(self, base, action):
        """The ops one uninterrupted C{action} does."""
        volume, files = open_with(self.copy(base))
        self.successResultOf(action(volume))
        volume.close()
        return list(files.ops)

    def crash_points(self, ops):
        """(op index, bytes landed, rename lands) for each place to crash."""
        for index, (name, detail) in enumerate(ops):
            if name == "pwrite":
                cuts = sorted({0, 1, detail // 3, detail // 2, detail - 1, detail})
                cuts += range(0, detail, 97)
                for cut in sorted(set(cuts)):
                    yield index, cut, False
            elif name == "rename":
                yield index, 0, False
                yield index, 0, True
            else:
                yield index, 0, False

    def check_all(self, action, expect_ids, empties=False):
        """
        Crash C{action} at every point: the old file, or the new one with
        the new IDs (and no records if C{empties}).
        """
        base = self.make_base(self.BATCHES)
        before = recover(base)
        old_ids = (before.header.cluster_id, before.header.node_id)
        new_ids = expect_ids(old_ids)
        ops = self.steps(base, action)
        names = [name for name, _ in ops]
        writes = names.count("pwrite")
        self.assertEqual(names, ["create"] + ["pwrite"] * writes + ["sync", "rename", "sync_dir"])
        self.assertGreaterEqual(writes, 1 if empties else self.MIN_WRITES)
        renamed = False
        for index, cut, lands in self.crash_points(ops):
            path = self.copy(base)
            volume, files = open_with(path)
            files.crash_at, files.cut, files.rename_lands = index, cut, lands
            d = action(volume)
            self.failureResultOf(d)
            volume.close()
            loaded = recover(path)
            ids = (loaded.header.cluster_id, loaded.header.node_id)
            past_rename = ops[index][0] == "sync_dir" or lands
            new_state = replay([]) if empties else before.state
            self.assertEqual(loaded.state, new_state if past_rename else before.state)
            renamed = renamed or past_rename
            self.assertEqual(ids, new_ids if past_rename else old_ids)
            if past_rename:
                self.assertNotEqual(loaded.header.file_id, before.header.file_id)
            self.assertFalse(os.path.exists(os.path.join(path, "kms.db.tmp")))
        self.assertTrue(renamed)

    def test_compaction(self):
        """Every crash point of compact() leaves the old or the new file, same state."""
        self.check_all(lambda v: v.compact(), lambda ids: ids)

    def test_rewrite_header(self):
        """Every crash point of rewrite_header() leaves old or new IDs, same state."""
        self.check_all(lambda v: v.rewrite_header("joined-cluster", 4), lambda ids: ("joined-cluster", 4))

    def test_reset(self):
        """Every crash point of reset() leaves the old file or an empty one with new IDs."""
        self.check_all(lambda v: v.reset("joined-cluster", 2), lambda ids: ("joined-cluster", 2), True)

    def test_first_start(self):
        """A crash while creating kms.db never leaves a broken file."""
        root = self.mktemp()
        os.makedirs(root)
        for index in range(5):
            for cut in (0, 50):
                path = os.path.join(root, f"new{index}-{cut}")
                files = FaultyFiles()
                files.crash_at, files.cut, files.rename_lands = index, cut, True
                self.assertRaises(SimulatedCrash, load_volume, path, HSM, files)
                loaded = recover(path)
                self.assertEqual(loaded.state, replay([]))


class CompactionUnderWritesCrashTests(CrashTestCase):
    """
    A crash at every step of a compaction while appends go on to the old
    file between its slices, one of them a snapshot that makes it start
    again: recovery finds every acknowledged record, whichever file it
    finds.
    """

    BATCHES = CompactionCrashTests.BATCHES
    LATER = [
        [Snapshot(SnapshotMeta(30, 1, b"members"), b"later" * 50)],
        [entry(31)],
        [entry(32), HardState(3, 1, 30)],
        [entry(33)],
    ]

    def setUp(self):
        self.patch(layout, "PIECE_SIZE", 100)
        self.patch(volume, "REWRITE_SLICE_BYTES", 300)
        return super().setUp()

    def run_compaction(self, path, crash_at=None, cut=0, lands=False):
        """
        Compact C{path}, making one of L{LATER}'s appends after each of the
        first storage steps; crash at op C{crash_at}.

        @return: how many of L{LATER} were acknowledged, how many of them
            before the compaction ended, whether it succeeded, and the
            ops done.
        """
        runner = StepRunner()
        vol, files = open_with(path, runner)
        files.crash_at, files.cut, files.rename_lands = crash_at, cut, lands
        compacted = vol.compact()
        appends = []
        acked_before_end = 0
        while runner.pending:
            runner.step()
            if not compacted.called:
                acked_before_end = sum(1 for d in appends if d.called)
            if len(appends) < len(self.LATER):
                appends.append(vol.append(self.LATER[len(appends)]))
        outcomes: list = []
        for d in [*appends, compacted]:
            d.addBoth(outcomes.append)
        self.successResultOf(vol.close())
        acked = len(list(itertools.takewhile(lambda outcome: outcome is None, outcomes[:-1])))
        return acked, acked_before_end, outcomes[-1] is None, list(files.ops)

    def expected(self, before, count):
        """The state holding C{before} and the first C{count} later batches."""
        return replay(before.records() + [r for batch in self.LATER[:count] for r in batch])

    def test_appends_during_compaction(self):
        """Every crash point leaves the acknowledged appends, and perhaps the one in flight."""
        base = self.make_base(self.BATCHES)
        before = recover(base).state
        whole = self.copy(base)
        acked, acked_before_end, compacted, ops = self.run_compaction(whole)
        self.assertEqual((acked, compacted), (len(self.LATER), True))
        self.assertGreaterEqual(acked_before_end, 2, "appends were acknowledged while it ran")
        self.assertEqual(recover(whole).state, self.expected(before, len(self.LATER)))
        names = [name for name, _ in ops]
        self.assertEqual(names.count("create"), 2, "the snapshot started the compaction again")
        rename = names.index("rename")
        self.assertEqual(names[rename - 1 : rename + 2], ["sync", "rename", "sync_dir"])
        for index, (name, detail) in enumerate(ops):
            cuts = sorted({0, detail // 2, detail}) if name == "pwrite" else [0]
            for cut in cuts:
                for lands in (False, True) if name == "rename" else (False,):
                    path = self.copy(base)
                    acked, _, _, _ = self.run_compaction(path, index, cut, lands)
                    state = recover(path).state
                    allowed = [self.expected(before, n) for n in range(acked, len(self.LATER) + 1)]
                    self.assertIn(state, allowed, f"crash at op {index} ({name}, cut {cut}, lands {lands})")
                    self.assertFalse(os.path.exists(os.path.join(path, "kms.db.tmp")))


class CorruptionTests(CrashTestCase):
    """Every flipped byte is refused at start or lies in the cut tail."""

    RECORDS = [
        [entry(1)],
        [HardState(1, 0, 0)],
        [entry(2)],
        [Snapshot(SnapshotMeta(1, 1, b"c"), b"s")],
        [entry(3)],
    ]

    def test_flip_every_byte(self):
        """No flip in any byte, header included, is accepted as data."""
        base = self.make_base(self.RECORDS)
        with open(os.path.join(base, "kms.db"), "rb") as f:
            original = f.read()
        full = recover(base)
        starts = record_starts(original, full)
        header_end, last = starts[0], starts[-1]
        flat = [r for b in self.RECORDS for r in b]
        self.assertEqual(full.state, replay(flat))
        path = self.copy(base)
        target = os.path.join(path, "kms.db")
        accepted = refused = 0
        for pattern in (0x01, 0x80, 0xFF):
            for i in range(len(original)):
                damaged = bytearray(original)
                damaged[i] ^= pattern
                with open(target, "wb") as f:
                    f.write(damaged)
                try:
                    got = recover(path)
                except StartupError as e:
                    message = str(e)
                    self.assertNotIn("\n", message)
                    offset = int(re.search(r" at offset (\d+);", message).group(1))
                    self.assertLessEqual(offset, i)
                    self.assertIn(offset, (0, 8) if i < header_end else starts)
                    refused += 1
                else:
                    self.assertGreaterEqual(i, last, f"flip at {i} accepted")
                    self.assertEqual(got.state, replay(flat[:-1]))
                    self.assertEqual(got.end, last)
                    accepted += 1
        self.assertEqual(accepted, 3 * (len(original) - last))
        self.assertEqual(refused, 3 * last)


def record_starts(data, loaded):
    """The file offset of every frame in C{data}."""
    sealer = RecordSealer(loaded.rek, loaded.header.file_id)
    return [frame.offset for frame in scan(data, decode_header(data)[1], sealer).frames]


class SmallChunks:
    """
    Run a test case's crashes with recovery reading C{kms.db} 64 bytes at a
    time and compaction writing 100-byte pieces, so that every crash point
    also crosses chunk boundaries, and the snapshot is sealed in pieces.
    """

    MIN_WRITES = 3

    def setUp(self):
        self.patch(window, "CHUNK_SIZE", 64)
        self.patch(layout, "PIECE_SIZE", 100)
        return super().setUp()


class AppendCrashSmallChunkTests(SmallChunks, AppendCrashTests):
    """L{AppendCrashTests}, recovered in small chunks."""


class CompactionCrashSmallChunkTests(SmallChunks, CompactionCrashTests):
    """L{CompactionCrashTests}, written in small pieces and recovered in small chunks."""


class CorruptionSmallChunkTests(SmallChunks, CorruptionTests):
    """L{CorruptionTests}, recovered in small chunks."""
