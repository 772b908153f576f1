"""
Append throughput and latency of the volume, next to the disk's raw fsync rate.

    .venv/bin/python bench/storage_append.py [--seconds 3] [--size 100] [--state-mib 64]

For 1, 16 and 256 concurrent writers (each loops: append one entry, wait
for its Deferred), prints appends/s and p50/p99 latency, then the ratio of
256-writer to 1-writer throughput (group commit; the target is 20x or
more).  The raw figure is a loop of pwrite + fdatasync of one frame-sized
record on the same file system, measured in the same run.  Then 16 writers
append while a compaction rewrites a state of C{--state-mib} MiB: how long
it took, and what the appends made during it waited, against the 16-writer
run without one.  Prints figures; never fails.
"""

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cryptography  # noqa: E402
import twisted  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from minkms.hsm import SoftHSM  # noqa: E402
from minkms.raft.types import Entry, SnapshotMeta  # noqa: E402
from minkms.storage.layout import RecordSealer  # noqa: E402
from minkms.storage.records import Snapshot, encode_record  # noqa: E402
from minkms.storage.volume import open_volume  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scratch_dir() -> str:
    """A temp dir on the repository's file system."""
    tmp = tempfile.gettempdir()
    parent = tmp if os.stat(tmp).st_dev == os.stat(REPO).st_dev else REPO
    return tempfile.mkdtemp(prefix="minkms-bench-", dir=parent)


def percentile(values, fraction):
    """The value below which C{fraction} of C{values} lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def raw_fsync(path: str, size: int, seconds: float) -> tuple[float, list[float]]:
    """pwrite + fdatasync of C{size} bytes in a loop: rate and latencies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    record = os.urandom(size)
    latencies = []
    offset = 0
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            os.pwrite(fd, record, offset)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - t0)
            offset += size
    finally:
        os.close(fd)
    return len(latencies) / (time.perf_counter() - start), latencies


def start_writers(volume, writers, first_index, payload, latencies, state) -> list:
    """
    Start C{writers} loops of append-then-wait, each append's latency
    going to C{latencies}, until C{state["stop"]}; their Deferreds fire
    once each loop stopped.
    """
    counter = iter(range(first_index, 2**62))
    finished = []

    def writer(done):
        def next_append(_=None):
            if state["stop"]:
                done.callback(None)
                return
            t0 = time.perf_counter()
            d = volume.append([Entry(next(counter), 1, 0, payload)])
            d.addCallback(acked, t0)
            d.addErrback(done.errback)

        def acked(_, t0):
            latencies.append(time.perf_counter() - t0)
            next_append()

        next_append()

    for _ in range(writers):
        done = defer.Deferred()
        finished.append(done)
        writer(done)
    return finished


@defer.inlineCallbacks
def run_writers(reactor, path, hsm, writers, seconds, payload):
    """C{writers} loops of append-then-wait for C{seconds}: rate, latencies."""
    volume = yield open_volume(path, hsm, reactor=reactor, compact_threshold=2**40)
    latencies = []
    state = {"stop": False}
    start = time.perf_counter()
    finished = start_writers(volume, writers, 1, payload, latencies, state)
    yield task.deferLater(reactor, seconds, lambda: None)
    state["stop"] = True
    yield defer.gatherResults(finished)
    elapsed = time.perf_counter() - start
    yield volume.close()
    return len(latencies) / elapsed, latencies


@defer.inlineCallbacks
def run_compaction(reactor, path, hsm, writers, state_mib, payload):
    """
    C{writers} loops of append-then-wait while a compaction rewrites a
    snapshot of C{state_mib} MiB and 1,000 entries: how long it took, and
    the latencies of the appends made during it.
    """
    volume = yield open_volume(path, hsm, reactor=reactor, compact_threshold=2**40)
    yield volume.append([Snapshot(SnapshotMeta(1000, 1, b""), os.urandom(state_mib << 20))])
    yield volume.append([Entry(i, 1, 0, payload) for i in range(1001, 2001)])
    latencies = []
    state = {"stop": False}
    finished = start_writers(volume, writers, 2001, payload, latencies, state)
    start = time.perf_counter()
    yield volume.compact()
    took = time.perf_counter() - start
    state["stop"] = True
    yield defer.gatherResults(finished)
    yield volume.close()
    return took, latencies


@defer.inlineCallbacks
def main(reactor, argv):
    """Measure the raw disk, then each writer count, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=100, help="entry data bytes")
    parser.add_argument("--state-mib", type=int, default=64, help="state size for the compaction run")
    args = parser.parse_args(argv)
    payload = os.urandom(args.size)
    frame = len(RecordSealer(b"\0" * 32, b"\0" * 16).frame(0, 0, encode_record(Entry(1, 1, 0, payload))))
    root = scratch_dir()
    hsm = SoftHSM.generate()
    try:
        print(
            f"python {platform.python_version()}, twisted {twisted.__version__}, "
            f"cryptography {cryptography.__version__}, {os.cpu_count()} CPUs, "
            f"{platform.system()} {platform.release()}"
        )
        print(f"scratch dir {root}; entry data {args.size} B -> frame {frame} B; {args.seconds:g} s per run")
        raw, lat = raw_fsync(os.path.join(root, "raw"), frame, args.seconds)
        print(
            f"{'raw pwrite+fdatasync':>24}: {raw:9.0f} /s   p50 {percentile(lat, 0.5) * 1e3:6.3f} ms"
            f"   p99 {percentile(lat, 0.99) * 1e3:6.3f} ms"
        )
        rates = {}
        p99s = {}
        for writers in (1, 16, 256):
            path = os.path.join(root, f"vol{writers}")
            rate, lat = yield run_writers(reactor, path, hsm, writers, args.seconds, payload)
            rates[writers] = rate
            p99s[writers] = percentile(lat, 0.99)
            print(
                f"{f'{writers} writer(s)':>24}: {rate:9.0f} /s   p50 {percentile(lat, 0.5) * 1e3:6.3f} ms"
                f"   p99 {percentile(lat, 0.99) * 1e3:6.3f} ms   ({rate / raw:.2f}x raw fsync rate)"
            )
        print(f"256-writer / 1-writer throughput: {rates[256] / rates[1]:.1f}x (target >= 20x)")
        took, lat = yield run_compaction(reactor, os.path.join(root, "compact"), hsm, 16, args.state_mib, payload)
        longest = max(lat, default=0.0)
        print(
            f"{'16 writers, compaction':>24}: of a {args.state_mib} MiB state took {took:.2f} s; "
            f"{len(lat)} appends during it, p50 {percentile(lat, 0.5) * 1e3 if lat else 0:6.3f} ms"
            f"   p99 {percentile(lat, 0.99) * 1e3 if lat else 0:6.3f} ms   longest {longest * 1e3:.1f} ms"
            f" ({longest / p99s[16]:.1f}x the 16-writer p99 without one)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    task.react(main, (sys.argv[1:],))
