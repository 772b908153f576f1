"""
Tests for the volume: opening, locking, group commit, failures, compaction.
"""

import os
import stat
import subprocess
import sys
import threading

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from minkms.errors import StartupError
from minkms.hsm import SoftHSM
from minkms.raft.types import Entry, HardState, SnapshotMeta
from minkms.storage import files as files_module, layout, volume as volume_module
from minkms.storage.errors import CompactionAborted, StorageFailed
from minkms.storage.faults import FaultyFiles, eio, enospc
from minkms.storage.inline import InlineAppends
from minkms.storage.layout import sealed_size
from minkms.storage.records import Snapshot
from minkms.storage.replay import replay
from minkms.storage.startup import load_volume
from minkms.storage.volume import (
    InlineRunner,
    StepRunner,
    open_volume,
    open_volume_now,
)

WRONG_KEY = "failed to unseal root encryption key with HSM: invalid ciphertext"


def entry(i, term=1, size=20):
    """A log entry whose data is C{size} copies of one byte."""
    return Entry(i, term, 0, bytes([i % 256]) * size)


class VolumeTestCase(TestCase):
    """Shared set-up: a temp volume path, an HSM, and tidy closing."""

    def setUp(self):
        self.path = os.path.join(self.mktemp(), "vol")
        self.hsm = SoftHSM.generate()

    def open(self, runner=None, files=None, **kw):
        """Open synchronously with an inline runner unless told otherwise."""
        runner = runner or InlineRunner()
        volume = open_volume_now(self.path, self.hsm, runner=runner, files=files, **kw)
        if files is not None:
            del files.ops[:]

        def close():
            d = volume.close()
            while isinstance(runner, StepRunner) and runner.pending:
                runner.step()
            return d

        self.addCleanup(close)
        return volume

    def reopen_state(self):
        """What a fresh start would recover right now."""
        loaded = load_volume(self.path, self.hsm)
        os.close(loaded.fd)
        os.close(loaded.lock_fd)
        return loaded.state


class OpenTests(VolumeTestCase):
    """First start creates the volume; later starts recover it."""

    def test_first_start(self):
        """A new volume: node 0, a UUID cluster ID, empty state, 0600/0700 modes."""
        volume = self.open()
        self.assertTrue(volume.created)
        self.assertEqual(volume.node_id, 0)
        self.assertEqual(len(volume.cluster_id), 36)
        self.assertEqual(volume.recovered, replay([]))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o700)
        for name in ("kms.db", ".lock"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.path, name)).st_mode), 0o600)

    def test_founding_is_part_of_creation(self):
        """
        With C{founding}, a new kms.db holds the founding records from the
        start, and one left half-made (a header, no record) by an earlier
        start is completed at the next one, once.
        """
        founding = [entry(1), HardState(1, None, 1)]
        volume = self.open(founding=lambda cluster_id: founding)
        self.assertTrue(volume.created)
        self.assertEqual(volume.recovered, replay(founding))
        volume.close()
        self.assertEqual(self.reopen_state(), replay(founding))

        half_made = os.path.join(self.mktemp(), "vol")
        self.path = half_made
        self.open().close()
        again = self.open(founding=lambda cluster_id: founding)
        self.assertFalse(again.created)
        self.assertEqual(again.recovered, replay(founding))
        self.assertEqual(len(again.warnings), 1)
        self.assertIn("founded the single-node cluster", again.warnings[0])
        again.close()
        self.assertEqual(self.reopen_state(), replay(founding))

    def test_state_survives_restart(self):
        """Entries, hard state and snapshot come back after close and open."""
        volume = self.open()
        cluster = volume.cluster_id
        volume.append([entry(i) for i in range(1, 6)])
        volume.save_hard_state(HardState(2, 1, 4))
        volume.save_snapshot(SnapshotMeta(3, 1, b"cfg"), b"state")
        volume.append_entries([entry(4, 2)])
        volume.close()
        again = self.open()
        self.assertFalse(again.created)
        self.assertEqual(again.cluster_id, cluster)
        self.assertEqual(again.recovered.hard_state, HardState(2, 1, 4))
        self.assertEqual(again.recovered.snapshot, Snapshot(SnapshotMeta(3, 1, b"cfg"), b"state"))
        self.assertEqual(again.recovered.entries, [entry(4, 2)])

    def test_wrong_hsm_key(self):
        """Another HSM key: the exact start-up message."""
        self.open().close()
        with self.assertRaises(StartupError) as caught:
            open_volume_now(self.path, SoftHSM.generate(), runner=InlineRunner())
        self.assertEqual(str(caught.exception), WRONG_KEY)

    @defer.inlineCallbacks
    def test_wrong_hsm_key_async(self):
        """open_volume fails its Deferred with the same message."""
        yield (yield open_volume(self.path, self.hsm)).close()
        with self.assertRaises(StartupError) as caught:
            yield open_volume(self.path, SoftHSM.generate())
        self.assertEqual(str(caught.exception), WRONG_KEY)

    def test_not_writable(self):
        """A volume that cannot be written: one clear line."""
        files = FaultyFiles()
        files.fail("open_lock", PermissionError(13, "Permission denied"))
        with self.assertRaises(StartupError) as caught:
            open_volume_now(self.path, self.hsm, runner=InlineRunner(), files=files)
        self.assertEqual(
            str(caught.exception), f"volume {os.path.abspath(self.path)} is not writable: Permission denied"
        )

    def test_not_writable_real(self):
        """A read-only volume directory, for a user that permissions apply to."""
        if os.geteuid() == 0:
            raise self.skipTest("root ignores directory permissions")
        os.makedirs(self.path, 0o500)
        self.addCleanup(os.chmod, self.path, 0o700)
        with self.assertRaises(StartupError) as caught:
            open_volume_now(self.path, self.hsm, runner=InlineRunner())
        self.assertIn("is not writable", str(caught.exception))

    def test_leftover_temp_file_removed(self):
        """An unfinished rewrite's temp file is removed with a warning."""
        self.open().close()
        with open(os.path.join(self.path, "kms.db.tmp"), "wb") as f:
            f.write(b"half a file")
        volume = self.open()
        self.assertFalse(os.path.exists(os.path.join(self.path, "kms.db.tmp")))
        self.assertIn("unfinished rewrite", volume.warnings[0])

    def test_reset_by_removing_kms_db(self):
        """rm kms.db makes the next start a fresh node with a new cluster ID."""
        volume = self.open()
        cluster = volume.cluster_id
        volume.append([entry(1)])
        volume.close()
        os.unlink(os.path.join(self.path, "kms.db"))
        again = self.open()
        self.assertTrue(again.created)
        self.assertNotEqual(again.cluster_id, cluster)
        self.assertEqual(again.recovered.entries, [])


class LockTests(VolumeTestCase):
    """A second process cannot open a volume that is in use."""

    CHILD = (
        "import sys\n"
        "from minkms.errors import StartupError\n"
        "from minkms.hsm import SoftHSM\n"
        "from minkms.storage.startup import load_volume\n"
        "try:\n"
        "    load_volume(sys.argv[1], SoftHSM.parse(sys.argv[2]))\n"
        "except StartupError as e:\n"
        "    print(e)\n"
        "    sys.exit(1)\n"
        "print('opened')\n"
    )

    def child(self):
        """Try to open the volume from another process."""
        return subprocess.run(
            [sys.executable, "-c", self.CHILD, self.path, self.hsm.to_text()],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_second_process_refused(self):
        """The child fails at once with one line; the first keeps working."""
        volume = self.open()
        result = self.child()
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stdout,
            f"volume {os.path.abspath(self.path)} is in use by another minkms process\n",
        )
        self.assertEqual(result.stderr, "")
        done = volume.append([entry(1)])
        self.assertIsNone(self.successResultOf(done))
        volume.close()
        self.assertEqual(self.child().stdout, "opened\n")

    def test_second_open_in_process_refused(self):
        """The lock also holds against a second open in the same process."""
        self.open()
        with self.assertRaises(StartupError) as caught:
            open_volume_now(self.path, self.hsm, runner=InlineRunner())
        self.assertIn("is in use by another minkms process", str(caught.exception))


class GroupCommitTests(VolumeTestCase):
    """Appends that arrive during an fsync share the next one."""

    def test_batches_and_order(self):
        """100 appends during one fsync: 2 fsyncs in all, Deferreds in order, none early."""
        runner = StepRunner()
        files = FaultyFiles()
        volume = self.open(runner=runner, files=files)
        fired = []
        for i in range(1, 101):
            volume.append([entry(i)]).addCallback(lambda _, i=i: fired.append(i))
        self.assertEqual(len(runner.pending), 1)
        self.assertEqual(fired, [])
        runner.step()
        self.assertEqual(fired, [1])
        self.assertEqual(files.syncs, 1)
        self.assertEqual(len(runner.pending), 1)
        runner.step()
        self.assertEqual(fired, list(range(1, 101)))
        self.assertEqual(files.syncs, 2)
        self.assertEqual([op for op, _ in files.ops], ["pwrite", "sync"] * 2)
        volume.close()
        self.assertEqual(self.reopen_state().entries, [entry(i) for i in range(1, 101)])

    @defer.inlineCallbacks
    def test_real_thread(self):
        """With the storage thread: far fewer fsyncs than appends, none on the reactor thread."""
        files = FaultyFiles()
        volume = yield open_volume(self.path, self.hsm, files=files)
        self.addCleanup(volume.close)
        fired = []
        appends = [volume.append([entry(i)]).addCallback(lambda _, i=i: fired.append(i)) for i in range(1, 201)]
        yield defer.gatherResults(appends)
        self.assertEqual(fired, list(range(1, 201)))
        self.assertLess(files.syncs, 20)
        self.assertNotIn(threading.get_ident(), files.sync_threads)
        yield volume.close()
        self.assertEqual(self.reopen_state().entries, [entry(i) for i in range(1, 201)])

    def test_writer_loops(self):
        """Sixteen writers each appending after the last ack share fsyncs."""
        runner = StepRunner()
        files = FaultyFiles()
        volume = self.open(runner=runner, files=files)
        acked = []
        counter = iter(range(1, 10**6))

        def writer(_=None):
            if len(acked) < 160:
                i = next(counter)
                volume.append([entry(i)]).addCallback(lambda _: acked.append(i)).addCallback(writer)

        for _ in range(16):
            writer()
        while runner.pending:
            runner.step()
        self.assertEqual(acked, sorted(acked))
        self.assertLess(files.syncs, 20)


class SyncedWriteTests(VolumeTestCase):
    def test_appends_survive_with_either_way_of_syncing(self):
        """An append is written and synced by one C{RWF_DSYNC} write, or by C{pwrite} and C{fdatasync} without it."""
        for first, flag in ((1, files_module.DSYNC), (3, None)):
            self.patch(files_module, "DSYNC", flag)
            volume = open_volume_now(self.path, self.hsm, runner=InlineRunner())
            self.successResultOf(volume.append([entry(first), entry(first + 1)]))
            self.successResultOf(volume.close())
            self.assertEqual(self.reopen_state().entries, [entry(i) for i in range(1, first + 2)])


class InlineAppendTests(VolumeTestCase):
    """On a fast disk the caller's thread writes small batches itself; the rest goes to the runner."""

    def open_learned(self, max_seconds: float):
        """A volume on a L{StepRunner} whose rule has timed a window of three appends (entries 1-3)."""
        runner = StepRunner()
        files = FaultyFiles()
        volume = self.open(runner=runner, files=files, inline=InlineAppends(max_seconds=max_seconds, window=3))
        for i in range(1, 4):
            self.written_by_runner(volume, runner, [entry(i)])
        return volume, runner, files

    def written_by_runner(self, volume, runner, records):
        """Append C{records} and check that the runner writes them, not the caller."""
        d = volume.append(records)
        self.assertNoResult(d)
        runner.step()
        self.successResultOf(d)

    def test_fast_disk_writes_at_once(self):
        """Once the disk is known to be fast, an append is written and fsynced before append() returns."""
        volume, runner, files = self.open_learned(max_seconds=60.0)
        syncs = files.syncs
        self.successResultOf(volume.append([entry(4), entry(5)]))
        self.assertEqual(runner.pending, [])
        self.assertEqual(files.syncs, syncs + 1)
        self.successResultOf(volume.close())
        self.assertEqual(self.reopen_state().entries, [entry(i) for i in range(1, 6)])

    def test_slow_disk_stays_on_the_runner(self):
        """Appends slower than the limit keep going to the runner."""
        volume, runner, files = self.open_learned(max_seconds=0.0)
        self.written_by_runner(volume, runner, [entry(4)])

    def test_snapshots_and_large_batches_go_to_the_runner(self):
        """A snapshot, or more entry bytes than the limit, is written by the runner even on a fast disk."""
        volume, runner, files = self.open_learned(max_seconds=60.0)
        snapshot = Snapshot(SnapshotMeta(3, 1, b"cfg"), b"state")
        for records in ([snapshot], [entry(4, size=InlineAppends().max_bytes + 1)]):
            self.written_by_runner(volume, runner, records)

    def test_waits_for_the_running_job(self):
        """An append made while the runner writes waits for it, then goes at once, in order."""
        volume, runner, files = self.open_learned(max_seconds=60.0)
        snapshot = Snapshot(SnapshotMeta(3, 1, b"cfg"), b"state")
        first = volume.append([snapshot])
        second = volume.append([entry(4)])
        self.assertNoResult(second)
        runner.step()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(runner.pending, [])
        self.successResultOf(volume.close())
        state = self.reopen_state()
        self.assertEqual((state.snapshot, state.entries), (snapshot, [entry(4)]))


class QueueDepthTests(VolumeTestCase):
    """A long queue is drained in a loop, not by recursion."""

    def test_many_queued_appends_fail_together(self):
        """Thousands of appends queued behind a failing write all fail, in order."""
        runner = StepRunner()
        files = FaultyFiles()
        volume = self.open(runner=runner, files=files)
        first = volume.append([entry(1)])
        failed = []
        for i in range(2, 5002):
            volume.append([entry(i)]).addErrback(lambda f, i=i: failed.append(i))
        files.fail("sync", eio())
        runner.step()
        self.failureResultOf(first, StorageFailed)
        self.assertEqual(failed, list(range(2, 5002)))


class FailureTests(VolumeTestCase):
    """A failed write or fsync stops the volume for good."""

    def test_enospc(self):
        """Full disk: the append fails, queued and later ones fail, nothing unsynced kept."""
        runner = StepRunner()
        files = FaultyFiles()
        volume = self.open(runner=runner, files=files)
        first = volume.append([entry(1)])
        runner.step()
        self.successResultOf(first)
        files.fail("pwrite", enospc(), partial=30)
        doomed = volume.append([entry(2)])
        queued = volume.append([entry(3)])
        runner.step()
        failure = self.failureResultOf(doomed, StorageFailed)
        self.assertRegex(
            failure.getErrorMessage(),
            r"^storage failed: cannot write .*kms\.db: \[Errno 28\] No space left on device$",
        )
        self.failureResultOf(queued, StorageFailed)
        self.assertEqual(volume.failed, failure.getErrorMessage())
        files.heal("pwrite")
        writes = len(files.ops)
        later = volume.append([entry(4)])
        self.failureResultOf(later, StorageFailed)
        self.failureResultOf(volume.compact(), StorageFailed)
        self.assertEqual(len(files.ops), writes)
        self.assertEqual(runner.pending, [])
        volume.close()
        self.assertEqual(self.reopen_state().entries, [entry(1)])

    def test_fsync_error(self):
        """An fsync error fails the append and the volume; no retry."""
        files = FaultyFiles()
        volume = self.open(files=files)
        self.successResultOf(volume.append([entry(1)]))
        files.fail("sync", eio())
        failure = self.failureResultOf(volume.append([entry(2)]), StorageFailed)
        self.assertIn("cannot write and fsync", failure.getErrorMessage())
        self.assertIn("Input/output error", volume.failed)
        syncs = files.syncs
        self.failureResultOf(volume.append([entry(3)]), StorageFailed)
        self.assertEqual(files.syncs, syncs)
        volume.close()
        self.assertIn(self.reopen_state().entries, ([entry(1)], [entry(1), entry(2)]))

    def test_bad_record_refused_without_failing(self):
        """A malformed record fails its own append at once and harms nothing."""
        volume = self.open()
        self.failureResultOf(volume.append(["nonsense"]), TypeError)
        self.assertIsNone(volume.failed)
        self.successResultOf(volume.append([entry(1)]))

    def test_closed(self):
        """Appends after close fail; close twice is fine."""
        volume = self.open()
        self.successResultOf(volume.close())
        self.failureResultOf(volume.append([entry(1)]), StorageFailed)
        self.successResultOf(volume.close())


class CompactionTests(VolumeTestCase):
    """Compaction rewrites the file with the same durable state."""

    def small_slices(self, size):
        """Write new files in pieces and slices of C{size} bytes, so that a small state takes several."""
        self.patch(layout, "PIECE_SIZE", size)
        self.patch(volume_module, "REWRITE_SLICE_BYTES", size)

    def test_explicit(self):
        """compact() shrinks the file and the state survives a restart."""
        volume = self.open()
        volume.append([entry(i, size=200) for i in range(1, 51)])
        volume.save_snapshot(SnapshotMeta(40, 1, b"c"), b"s" * 100)
        volume.save_hard_state(HardState(1, 0, 45))
        before = volume.size
        self.successResultOf(volume.compact())
        self.assertLess(volume.size, before)
        self.assertEqual(os.path.getsize(os.path.join(self.path, "kms.db")), volume.size)
        volume.append([entry(51)])
        volume.close()
        state = self.reopen_state()
        self.assertEqual(state.snapshot.meta.index, 40)
        self.assertEqual([e.index for e in state.entries], list(range(41, 52)))
        self.assertEqual(state.hard_state, HardState(1, 0, 45))

    def test_automatic(self):
        """Passing the threshold compacts by itself; appends keep their order."""
        volume = self.open(compact_threshold=8000)
        sizes = []
        for i in range(1, 301):
            volume.append([entry(i, size=100)])
            if i % 50 == 0:
                volume.save_snapshot(SnapshotMeta(i - 10, 1, b""), b"x")
            sizes.append(volume.size)
        self.assertTrue(any(b < a for a, b in zip(sizes, sizes[1:])))
        self.assertLess(volume.size, 16000)
        volume.close()
        state = self.reopen_state()
        self.assertEqual(state.snapshot.meta.index, 290)
        self.assertEqual([e.index for e in state.entries], list(range(291, 301)))

    def test_frequent_restarts_still_compact(self):
        """
        A node that restarts between every few hundred writes keeps
        C{kms.db} near the size of its live state: the compaction trigger
        does not grow with the file found at each start.
        """
        threshold = 8000
        index = 0
        sizes = []
        for _restart in range(20):
            volume = self.open(compact_threshold=threshold)
            for _ in range(40):
                index += 1
                volume.append([entry(index, size=100)])
                if index % 25 == 0:
                    volume.save_snapshot(SnapshotMeta(index - 5, 1, b""), b"x" * 200)
            self.successResultOf(volume.close())
            sizes.append(os.path.getsize(os.path.join(self.path, "kms.db")))
        state = self.reopen_state()
        self.assertEqual(state.entries[-1].index, index)
        live = sealed_size(state.records())
        batch = sealed_size([entry(index, size=100)])
        bound = max(threshold, 2 * live) + batch
        self.assertLess(max(sizes), bound, f"kms.db sizes after each restart: {sizes}")

    def test_appends_go_on_during_compaction(self):
        """
        Appends made while a compaction writes the new file are fsynced to
        the old one and acknowledged before it ends, appends that never
        stop coming do not hold it, and the new file holds them too.
        """
        self.small_slices(1000)
        runner = StepRunner()
        volume = self.open(runner=runner)
        volume.append([entry(i, size=200) for i in range(1, 51)])
        runner.step()
        compacted = volume.compact()
        runner.step()
        runner.step()
        during = volume.append([entry(51)])
        runner.step()
        runner.step()
        self.successResultOf(during)
        self.assertNoResult(compacted)
        index = 52
        while not compacted.called:
            self.assertLess(index, 200, "appends arriving all the time held the compaction")
            volume.append([entry(index)])
            index += 1
            runner.step()
        self.successResultOf(compacted)
        self.assertEqual(os.path.getsize(os.path.join(self.path, "kms.db")), volume.size)
        while runner.pending:
            runner.step()
        self.successResultOf(volume.close())
        self.assertEqual([e.index for e in self.reopen_state().entries], list(range(1, index)))

    def test_snapshot_during_compaction_restarts_it(self):
        """
        A snapshot saved while a compaction runs supersedes the state it
        was writing: it starts again from the new state, so the new file
        holds one snapshot, not both.
        """
        self.small_slices(1000)
        runner = StepRunner()
        volume = self.open(runner=runner)
        volume.append([entry(i, size=200) for i in range(1, 51)])
        volume.save_snapshot(SnapshotMeta(40, 1, b"c"), b"old" * 5000)
        runner.step()
        compacted = volume.compact()
        runner.step()
        runner.step()
        volume.save_snapshot(SnapshotMeta(48, 1, b"c"), b"new" * 5000)
        while runner.pending:
            runner.step()
        self.successResultOf(compacted)
        self.successResultOf(volume.close())
        state = self.reopen_state()
        self.assertEqual((state.snapshot.meta.index, [e.index for e in state.entries]), (48, [49, 50]))
        header = os.path.getsize(os.path.join(self.path, "kms.db")) - sealed_size(state.records())
        self.assertLess(header, 1000)

    def test_reset_holds_appends_until_done(self):
        """Appends made during a reset belong to the new, empty log and wait for it."""
        self.small_slices(100)
        runner = StepRunner()
        volume = self.open(runner=runner)
        volume.append([entry(i) for i in range(1, 21)])
        runner.step()
        reset = volume.reset("joined", 3)
        runner.step()
        after = volume.append([entry(7)])
        runner.step()
        self.assertNoResult(after)
        while runner.pending:
            runner.step()
        self.successResultOf(reset)
        self.successResultOf(after)
        self.successResultOf(volume.close())
        self.assertEqual(self.reopen_state(), replay([entry(7)]))

    def test_enospc_during_compaction_is_not_fatal(self):
        """A full disk while writing the new file leaves the old one in use."""
        files = FaultyFiles()
        volume = self.open(files=files)
        volume.append([entry(i) for i in range(1, 11)])
        files.fail("pwrite", enospc())
        failure = self.failureResultOf(volume.compact(), CompactionAborted)
        self.assertIn("No space left on device", failure.getErrorMessage())
        self.assertIsNone(volume.failed)
        self.assertFalse(os.path.exists(os.path.join(self.path, "kms.db.tmp")))
        files.heal("pwrite")
        self.successResultOf(volume.append([entry(11)]))
        volume.close()
        self.assertEqual([e.index for e in self.reopen_state().entries], list(range(1, 12)))

    def test_rewrite_header(self):
        """Joining a cluster: new cluster and node ID, state kept."""
        volume = self.open()
        volume.append([entry(1), entry(2)])
        self.successResultOf(volume.rewrite_header("a1b2", 5))
        self.assertEqual((volume.cluster_id, volume.node_id), ("a1b2", 5))
        volume.close()
        again = self.open()
        self.assertEqual((again.cluster_id, again.node_id), ("a1b2", 5))
        self.assertEqual(again.recovered.entries, [entry(1), entry(2)])
        self.failureResultOf(again.rewrite_header("", 1), ValueError)
        self.failureResultOf(again.rewrite_header("c", -1), ValueError)

    def test_reset(self):
        """Joining with an empty log: records gone, new IDs, appends carry on."""
        volume = self.open()
        volume.append([entry(1), entry(2), HardState(3, 0, 2)])
        self.successResultOf(volume.reset("joined", 3))
        self.assertEqual((volume.cluster_id, volume.node_id), ("joined", 3))
        self.successResultOf(volume.append([entry(7)]))
        volume.close()
        again = self.open()
        self.assertEqual((again.cluster_id, again.node_id), ("joined", 3))
        self.assertEqual(again.recovered, replay([entry(7)]))
        self.failureResultOf(again.reset("c", 2**64), ValueError)
