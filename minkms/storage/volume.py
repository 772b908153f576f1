"""
C{VOLUME/kms.db} with Deferred writes, group commit and compaction.

This is the only storage module that uses Twisted.  Encoding, writes,
fsyncs and compaction run on one dedicated storage thread, one job at a
time, and the reactor keeps the queue; but a small append batch on a fast
disk the reactor thread writes itself, when no job is running
(L{minkms.storage.inline}).

A rewrite (compaction, a new header, a reset) writes the new file in
slices (L{minkms.storage.rewrite}).  Between two slices of one that keeps
the records (a compaction, a new header), queued appends still go to the
old file, and they are copied into the new one before the rename: writes
do not wait for the whole state to be written.

Group commit: while a write and its fsync are in flight, new appends wait
in the queue; when the fsync returns, every waiting append goes out
together as one write and one fsync.  Deferreds fire in the order the
appends were made, and only after the fsync that covered them returned.

Failure is final.  If a write or fsync fails (a full disk, an I/O error),
the appends it covered fail, every queued and later append fails at once,
and L{Volume.failed} says why.  Nothing is retried, because after a failed
fsync the kernel may already have dropped the dirty pages and a second
fsync can succeed without the data.
"""

import collections
import queue
import threading
import time

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from minkms.raft.types import HardState, Snapshot, SnapshotMeta
from minkms.storage import rewrite
from minkms.storage.errors import CompactionAborted, StorageFailed, reason_of
from minkms.storage.files import OSFiles
from minkms.storage.inline import InlineAppends
from minkms.storage.layout import PIECE_SIZE, RecordSealer, encode_header, sealed_size
from minkms.storage.records import check_record
from minkms.storage.replay import DurableState
from minkms.storage.startup import LoadedVolume, load_volume

DEFAULT_COMPACT_THRESHOLD = 64 * 2**20
"""Compact once C{kms.db} passes this size and twice the size of its live records."""

REWRITE_SLICE_BYTES = PIECE_SIZE
"""How much of a new C{kms.db} one storage-thread job writes before queued appends may go."""

MAX_REWRITE_RESTARTS = 3
"""How many times a compaction starts again when a newer snapshot arrives while it runs."""


class ThreadRunner:
    """
    Runs blocking storage calls on one dedicated thread, in order.

    A job is handed over through a C{SimpleQueue} and its result comes back
    through C{callFromThread}: about a third of the reactor-side cost of
    Twisted's general thread pool (context propagation, worker
    coordination), which a node pays for every write it persists.
    """

    def __init__(self, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="minkms-storage", daemon=True)
        self._thread.start()
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self._shutdown)

    def _shutdown(self) -> None:
        self._trigger = None
        self._finish()

    def _finish(self) -> None:
        """Let the thread finish the job it is running, then wait for it to end."""
        self._jobs.put(None)
        self._thread.join()

    def run(self, f, *args) -> Deferred:
        """Call C{f(*args)} on the storage thread; the Deferred fires in the reactor."""
        d = Deferred()
        self._jobs.put((f, args, d))
        return d

    def _work(self) -> None:
        call = self._reactor.callFromThread
        while True:
            job = self._jobs.get()
            if job is None:
                return
            f, args, d = job
            try:
                result = f(*args)
            except BaseException:
                call(d.errback, Failure())
            else:
                call(d.callback, result)

    def stop(self) -> None:
        """Stop the thread (it must be idle)."""
        if self._trigger is not None:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
            self._finish()


class InlineRunner:
    """Runs blocking calls right away in the caller's thread: for tests and simulation."""

    def run(self, f, *args) -> Deferred:
        """Call C{f(*args)} now."""
        return maybeDeferred(f, *args)

    def stop(self) -> None:
        """Nothing to stop."""


class StepRunner:
    """
    Holds blocking calls until told to run them: for tests and simulation
    that decide when the disk finishes (a slow fsync, a batch forming).
    """

    def __init__(self) -> None:
        self.pending: list = []

    def run(self, f, *args) -> Deferred:
        """Queue C{f(*args)}; the Deferred fires when L{step} runs it."""
        d = Deferred()
        self.pending.append((f, args, d))
        return d

    def step(self) -> None:
        """Run the oldest queued call and fire its Deferred."""
        f, args, d = self.pending.pop(0)
        maybeDeferred(f, *args).chainDeferred(d)

    def stop(self) -> None:
        """Nothing to stop."""


@attrs.define
class _Append:
    records: list
    done: Deferred
    sync: bool = True


@attrs.define
class _Rewrite:
    """
    A new file for C{state}.  With C{keeps_state} it holds the records
    the old file holds, so appends may go on to the old file meanwhile.
    """

    state: DurableState
    cluster_id: str
    node_id: int
    done: Deferred
    keeps_state: bool = False
    restarts: int = 0


@attrs.define
class _Underway:
    """
    A rewrite between its slices, and the records appended to the old file
    meanwhile.  It is C{stale} once a new snapshot is among them: the state
    it writes is then superseded, and copying the snapshot after it would
    leave the new file twice the size it needs.
    """

    job: _Rewrite
    new: rewrite.NewFile
    tail: list = attrs.Factory(list)
    written: bool = False
    stale: bool = False
    appended: bool = False
    started: float = attrs.Factory(time.monotonic)


@attrs.define
class _Close:
    done: Deferred


def open_volume(
    path: str,
    hsm,
    *,
    reactor=None,
    files=None,
    runner=None,
    compact_threshold: int = DEFAULT_COMPACT_THRESHOLD,
) -> Deferred:
    """
    Lock and open (or create) the volume at C{path}, recovering in the
    storage thread.

    @return: a Deferred firing with a L{Volume}, or failing with
        L{minkms.errors.StartupError}.
    """
    files = files or OSFiles()
    runner = runner or ThreadRunner(reactor)
    d = runner.run(load_volume, path, hsm, files)

    def opened(loaded):
        return Volume(loaded, hsm, files, runner, compact_threshold)

    def not_opened(failure):
        runner.stop()
        return failure

    return d.addCallbacks(opened, not_opened)


def open_volume_now(
    path: str,
    hsm,
    *,
    reactor=None,
    files=None,
    runner=None,
    compact_threshold: int = DEFAULT_COMPACT_THRESHOLD,
    founding=None,
    inline: InlineAppends | None = None,
) -> "Volume":
    """
    Like L{open_volume} but recovers in the calling thread: for start-up
    code that runs before the reactor does.  C{founding}: see L{load_volume}.
    C{inline}: which appends the calling thread writes itself (none
    without it; see L{minkms.storage.inline}).

    @raise minkms.errors.StartupError: see L{load_volume}.
    """
    files = files or OSFiles()
    loaded = load_volume(path, hsm, files, founding)
    return Volume(loaded, hsm, files, runner or ThreadRunner(reactor), compact_threshold, inline)


class Volume:
    """
    An open, locked C{kms.db}: the durable Raft state of this node.

    @ivar recovered: the L{DurableState} found at open (hard state, latest
        snapshot, entries after it); not updated afterwards.
    @ivar warnings: what recovery fixed, one line each (also logged).
    @ivar failed: C{None}, or the C{"storage failed: ..."} reason once a
        write or fsync failed; from then on every append fails.
    @ivar inline: which appends the calling thread writes itself, or None
        (L{minkms.storage.inline}).
    """

    log = Logger()

    def __init__(
        self, loaded: LoadedVolume, hsm, files, runner, compact_threshold: int, inline: InlineAppends | None = None
    ) -> None:
        self.path = loaded.directory
        self.db_path = loaded.db_path
        self.recovered = loaded.state
        self.warnings = list(loaded.warnings)
        self.created = loaded.created
        self.failed: str | None = None
        self.compact_threshold = compact_threshold
        self._hsm = hsm
        self._files = files
        self._runner = runner
        self.inline = inline
        self._lock_fd = loaded.lock_fd
        self._fd = loaded.fd
        self._header = loaded.header
        self._rek = loaded.rek
        self._sealer = RecordSealer(loaded.rek, loaded.header.file_id)
        self._end = loaded.end
        self._live_size = _live_bytes(loaded)
        self._mirror = loaded.state.copy()
        self._on_batch = None
        self._queue = collections.deque()
        self._busy = False
        self._pumping = False
        self._underway: _Underway | None = None
        self._closed = False
        self._auto_compaction = False
        for line in self.warnings:
            self.log.warn("{line}", line=line)

    @property
    def cluster_id(self) -> str:
        """The cluster this node belongs to (a UUID string)."""
        return self._header.cluster_id

    @property
    def node_id(self) -> int:
        """This node's ID within its cluster."""
        return self._header.node_id

    @property
    def size(self) -> int:
        """Bytes of C{kms.db} that are written and fsynced."""
        return self._end

    def append(self, records, sync: bool = True) -> Deferred:
        """
        Make C{records} (L{Entry}, L{HardState}, L{Snapshot}) durable, in
        order after everything appended before.  With C{sync=False} they
        are written but the fsync is left to the next append that needs
        one (a commit index, which Raft may lose in a crash).

        @return: a Deferred that fires with C{None} once the records are
            written (and fsynced, with C{sync}), or fails with
            L{StorageFailed} (or, at once, C{TypeError}/C{ValueError} for a
            malformed record).
        """
        if self.failed is not None:
            return fail(StorageFailed(self.failed))
        if self._closed:
            return fail(StorageFailed("storage failed: volume is closed"))
        records = list(records)
        try:
            for record in records:
                check_record(record)
        except (TypeError, ValueError) as e:
            return fail(e)
        for record in records:
            self._mirror.apply(record)
        done = Deferred()
        self._queue.append(_Append(records, done, sync))
        self._pump()
        return done

    def instrument(self, wrap_files, on_batch) -> None:
        """
        Let metrics watch the disk: C{wrap_files(files)} returns the file
        layer to use instead (to time fsyncs), and C{on_batch(n)} is told
        the record count of every group-commit write.
        """
        self._files = wrap_files(self._files)
        self._on_batch = on_batch

    def append_entries(self, entries) -> Deferred:
        """L{append} for log entries."""
        return self.append(entries)

    def save_hard_state(self, hard_state: HardState) -> Deferred:
        """L{append} for the hard state (term, vote, commit)."""
        return self.append([hard_state])

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> Deferred:
        """L{append} for a snapshot; it drops the entries it covers."""
        return self.append([Snapshot(meta, data)])

    def compact(self) -> Deferred:
        """
        Rewrite C{kms.db} as header + latest snapshot + live entries + hard
        state, after everything appended so far.

        @return: a Deferred that fires once the new file has replaced the
            old one and the directory is fsynced.  If writing the new file
            fails before the rename, it fails with L{CompactionAborted} and
            the old file stays in use; a failure from the rename on fails
            the volume (L{StorageFailed}).
        """
        return self._queue_rewrite(self._header.cluster_id, self._header.node_id)

    def rewrite_header(self, cluster_id: str, node_id: int) -> Deferred:
        """
        Adopt C{cluster_id} and C{node_id} (C{minkms add}), by compaction.

        @return: as L{compact}; L{cluster_id} and L{node_id} change when it fires.
        """
        try:
            _check_ids(cluster_id, node_id)
        except ValueError as e:
            return fail(e)
        return self._queue_rewrite(cluster_id, node_id)

    def reset(self, cluster_id: str, node_id: int) -> Deferred:
        """
        Drop every record and adopt C{cluster_id} and C{node_id}: the node
        is joining a cluster and will receive the log from its leader.  The
        new file replaces the old one atomically, like a compaction.

        @return: as L{compact}.
        """
        try:
            _check_ids(cluster_id, node_id)
        except ValueError as e:
            return fail(e)
        return self._queue_rewrite(cluster_id, node_id, DurableState())

    def replace(self, records) -> Deferred:
        """
        Replace every record by C{records} (a snapshot, entries, a hard
        state), atomically like a compaction: the operator's forced
        membership edit (C{minkms edit}) rewrites the log this way.

        @return: as L{compact}.
        """
        state = DurableState()
        records = list(records)
        try:
            for record in records:
                check_record(record)
                state.apply(record)
        except (TypeError, ValueError) as e:
            return fail(e)
        return self._queue_rewrite(self._header.cluster_id, self._header.node_id, state)

    def _queue_rewrite(self, cluster_id: str, node_id: int, replacement: DurableState | None = None) -> Deferred:
        """
        Queue a new file under C{cluster_id} and C{node_id}: holding the
        records as they are (a compaction), or C{replacement} instead.
        """
        if self.failed is not None:
            return fail(StorageFailed(self.failed))
        if self._closed:
            return fail(StorageFailed("storage failed: volume is closed"))
        done = Deferred()
        if replacement is None:
            job = _Rewrite(self._mirror.copy(), cluster_id, node_id, done, keeps_state=True)
        else:
            self._mirror = replacement.copy()
            job = _Rewrite(replacement, cluster_id, node_id, done)
        self._queue.append(job)
        self._pump()
        return done

    def close(self) -> Deferred:
        """
        Finish queued work, then release the file, the lock and the thread.

        @return: a Deferred that fires when the volume is closed.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        done = Deferred()
        self._queue.append(_Close(done))
        self._pump()
        return done

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._busy:
                underway = self._underway
                if underway is not None and not self._append_goes_first(underway):
                    self._continue_rewrite(underway)
                elif self._queue:
                    self._start_next()
                else:
                    break
        finally:
            self._pumping = False

    def _append_goes_first(self, underway: _Underway) -> bool:
        """
        Whether the next storage job is the queued append batch rather than
        the rewrite's next step: for a rewrite that keeps the records, turn
        about, so that neither waits for the other to run out.
        """
        waiting = underway.job.keeps_state and self._queue and isinstance(self._queue[0], _Append)
        return bool(waiting) and not underway.appended

    def _start_next(self) -> None:
        job = self._queue.popleft()
        if isinstance(job, _Close):
            self._shut(job)
        elif self.failed is not None:
            job.done.errback(StorageFailed(self.failed))
        elif isinstance(job, _Append):
            batch = [job]
            while self._queue and isinstance(self._queue[0], _Append):
                batch.append(self._queue.popleft())
            records = [record for item in batch for record in item.records]
            sync = any(item.sync for item in batch)
            if self._on_batch is not None:
                self._on_batch(len(records))
            if self._underway is not None:
                self._underway.appended = True
                self._underway.tail.extend(records)
                if any(isinstance(record, Snapshot) for record in records):
                    self._underway.stale = True
            self._busy = True
            if self.inline is not None and self.inline.allows(records):
                d = maybeDeferred(self._write_batch, records, self._end, sync)
            else:
                d = self._runner.run(self._write_batch, records, self._end, sync)
            d.addCallbacks(self._written, self._write_failed, callbackArgs=(batch,), errbackArgs=(batch,))
        else:
            self._busy = True
            records = job.state.records()
            d = self._runner.run(
                rewrite.begin, self._files, self._hsm, self._rek, self.db_path, records, job.cluster_id, job.node_id
            )
            d.addCallbacks(self._began, self._rewrite_failed, callbackArgs=(job,), errbackArgs=(job,))

    def _began(self, new: rewrite.NewFile, job: _Rewrite) -> None:
        self._underway = _Underway(job, new)
        self._busy = False
        self._pump()

    def _continue_rewrite(self, underway: _Underway) -> None:
        """The next step of the rewrite under way: a slice, or the tail and the rename."""
        self._busy = True
        underway.appended = False
        job = underway.job
        if self.failed is not None:
            d = self._runner.run(rewrite.abandon, self._files, self.db_path, underway.new)
            d.addBoth(lambda _: self._rewrite_failed(Failure(StorageFailed(self.failed)), job))
        elif self._restartable(underway):
            job.state = self._mirror.copy()
            job.restarts += 1
            d = self._runner.run(rewrite.abandon, self._files, self.db_path, underway.new)
            d.addBoth(lambda _: self._restart(job))
        elif not underway.written:
            d = self._runner.run(rewrite.write_slice, self._files, self.db_path, underway.new, REWRITE_SLICE_BYTES)
            d.addCallbacks(self._slice_written, self._rewrite_failed, callbackArgs=(underway,), errbackArgs=(job,))
        else:
            d = self._runner.run(
                rewrite.finish, self._files, self.path, self.db_path, underway.new, list(underway.tail), self._fd
            )
            d.addCallbacks(self._rewritten, self._rewrite_failed, callbackArgs=(underway,), errbackArgs=(job,))

    def _restartable(self, underway: _Underway) -> bool:
        """
        Whether to start a stale rewrite again from the state as it is now:
        only while every append made is written (the state then holds
        nothing a later tail would copy again), and a few times at most.
        """
        return (
            underway.stale
            and underway.job.restarts < MAX_REWRITE_RESTARTS
            and not any(isinstance(job, _Append) for job in self._queue)
        )

    def _restart(self, job: _Rewrite) -> None:
        self._underway = None
        self._queue.appendleft(job)
        self._busy = False
        self._pump()

    def _slice_written(self, written: bool, underway: _Underway) -> None:
        underway.written = written
        self._busy = False
        self._pump()

    def _write_batch(self, records: list, start: int, sync: bool = True) -> tuple[int, float | None]:
        """Write C{records} at C{start}: where they end, and how long the write and fsync took (None unsynced)."""
        data = self._sealer.encode_batch(start, records)
        if not data:
            return start, None
        began = time.perf_counter()
        try:
            if sync:
                self._files.write_synced(self._fd, data, start)
            else:
                self._files.pwrite(self._fd, data, start)
        except Exception as e:
            what = "write and fsync" if sync else "write"
            raise StorageFailed(f"storage failed: cannot {what} {self.db_path}: {reason_of(e)}") from e
        return start + len(data), time.perf_counter() - began if sync else None

    def _written(self, written: tuple[int, float | None], batch: list) -> None:
        self._end, took = written
        if took is not None and self.inline is not None:
            self.inline.took(took)
        for item in batch:
            item.done.callback(None)
        self._busy = False
        self._maybe_compact()
        self._pump()

    def _write_failed(self, failure, batch: list) -> None:
        self._fail(failure)
        for item in batch:
            item.done.errback(StorageFailed(self.failed))
        self._busy = False
        self._pump()

    def _rewritten(self, end: int, underway: _Underway) -> None:
        new = underway.new
        self._underway = None
        self._header, self._sealer, self._fd, self._end = new.header, new.sealer, new.fd, end
        self._live_size = self._end
        self.log.info(
            "{path} rewritten: {size} bytes in {seconds:.2f} s, {tail} records appended meanwhile",
            path=self.db_path,
            size=self._end,
            seconds=time.monotonic() - underway.started,
            tail=len(underway.tail),
        )
        underway.job.done.callback(None)
        self._busy = False
        self._pump()

    def _rewrite_failed(self, failure, job: _Rewrite) -> None:
        self._underway = None
        if failure.check(CompactionAborted):
            self.log.error(
                "compaction abandoned, {path} unchanged: {why}",
                path=self.db_path,
                why=failure.getErrorMessage(),
            )
        else:
            self._fail(failure)
        job.done.errback(failure)
        self._busy = False
        self._pump()

    def _maybe_compact(self) -> None:
        if self._auto_compaction or self._closed:
            return
        if self._end <= max(self.compact_threshold, 2 * self._live_size):
            return
        self._auto_compaction = True

        def finished(result):
            self._auto_compaction = False
            if isinstance(result, Failure) and not result.check(StorageFailed, CompactionAborted):
                self.log.failure("compaction failed", result)
            return None

        self.compact().addBoth(finished)

    def _fail(self, failure) -> None:
        if self.failed is not None:
            return
        if failure.check(StorageFailed):
            self.failed = failure.getErrorMessage()
        else:
            self.failed = f"storage failed: {failure.getErrorMessage()}"
        self.log.critical("{reason}; no further writes", reason=self.failed)

    def _shut(self, job: _Close) -> None:
        for fd in (self._fd, self._lock_fd):
            try:
                self._files.close(fd)
            except Exception:
                pass
        self._runner.stop()
        job.done.callback(None)


def _live_bytes(loaded: LoadedVolume) -> int:
    """
    What C{kms.db} would hold right after a compaction: the header, the
    latest snapshot and the entries after it.  Measured from the recovered
    state rather than the file, so that a node restarting often still
    compacts.
    """
    return len(encode_header(loaded.header)) + sealed_size(loaded.state.records())


def _check_ids(cluster_id: str, node_id: int) -> None:
    if not isinstance(cluster_id, str) or not cluster_id:
        raise ValueError("cluster ID must be a non-empty string")
    if not isinstance(node_id, int) or not 0 <= node_id < 2**64:
        raise ValueError("node ID must be an unsigned 64-bit integer")
