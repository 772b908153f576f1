"""
The write path: KEY:CREATE through the HTTP API, committed by Raft and
fsynced before the reply, on a 1-node and a 3-node cluster of real server
processes on loopback.

The 1-node cluster is the baseline of the same run: its writes pay one
fsync and no network round trip, so the ratio shows what replication to a
majority costs.  A second 3-node cluster runs with read leases off
(C{cluster.read_lease: 0}): the ratio of the two shows what the lease rule
(every lease holder must have a write on disk before it is applied and
answered) costs a write.  For each cluster it prints the latency of one writer
(p50/p99) and the throughput of 1, 16 and 64 concurrent writers; writes go
to the first node (the leader) and, for 3 nodes, also through a follower,
which forwards them.  Figures only: this is never part of the tests.

    .venv/bin/python bench/write_path.py [--seconds 5]

With C{--against REV} it instead compares this working tree with commit
C{REV} on a 3-node cluster, C{--writers} writers to the leader: one cluster
at a time, new and base alternating (new-base, then base-new) for
C{--pairs} pairs, each on fresh volumes.  Runs of the same code differ by
10-15% on a shared 2-core machine, so one pair proves little; it prints
each run, then per pair the ratios new / base of p50 and of the server CPU
per write, their medians, and in how many pairs the new code was lower.
Two clusters at once (each with its own load) share the machine's noise
better, but they fill each other's idle moments, which hides what a
change does to the order in which three processes get two cores.

    .venv/bin/python bench/write_path.py --against HEAD~1 [--pairs 6] [--seconds 10] [--writers 1]
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from read_path import cpu_seconds  # noqa: E402  (bench/ is the script's directory)

from minkms.apikey import APIKey  # noqa: E402
from minkms.client import KMSClient  # noqa: E402
from minkms.hsm import SoftHSM  # noqa: E402
from minkms.wire import kms_pb2 as pb  # noqa: E402

ENCLAVE = "bench"


def _free_ports(count: int) -> list[int]:
    import socket

    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def _config_without_leases(workdir: str, port: int) -> list[str]:
    """C{--config} arguments for a node whose read leases are off."""
    from tests.support import write_server_certificate

    directory = os.path.join(workdir, f"conf-{port}")
    os.makedirs(directory)
    key, cert = write_server_certificate(directory)
    path = os.path.join(directory, "config.yaml")
    with open(path, "w") as f:
        f.write(f"version: v1\ntls:\n  certs:\n  - key: {key}\n    cert: {cert}\ncluster:\n  read_lease: 0\n")
    return ["--config", path]


def _start(hsm: SoftHSM, port: int, workdir: str, leases: bool = True, source: str = REPO) -> subprocess.Popen:
    """A server process running the C{minkms} package found in C{source} (this tree, or a base's)."""
    volume = os.path.join(workdir, f"node-{port}")
    log = open(os.path.join(workdir, f"node-{port}.log"), "ab")
    extra = [] if leases else _config_without_leases(workdir, port)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minkms.cli.main",
            "server",
            volume,
            "--dev",
            "--host",
            f"127.0.0.1:{port}",
            "--address",
            f"127.0.0.1:{port}",
            *extra,
        ],
        env=dict(os.environ, MINIO_KMS_HSM_KEY=hsm.to_text(), PYTHONPATH=source),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=source,
    )


async def _pause(reactor, seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def _form(reactor, client: KMSClient, hosts: list[str]) -> None:
    for host in hosts:
        for _ in range(300):
            try:
                await client.get("/v1/health/ready?write", host=host)
                break
            except Exception:
                await _pause(reactor, 0.1)
    for host in hosts[1:]:
        await client.call(1, pb.AddClusterNodeRequest(Host=host), host=hosts[0])
    await client.call(101, pb.CreateEnclaveRequest(Name=ENCLAVE), host=hosts[0])


async def write_loops(reactor, client, host: str, writers: int, seconds: float, prefix: str):
    """C{writers} loops of KEY:CREATE for C{seconds}: the latencies of the writes answered 200."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def loop(n: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await client.call(201, pb.CreateKeyRequest(Name=f"{prefix}-{n}-{i}"), enclave=ENCLAVE, host=host)
            except Exception as e:
                errors.append(str(e))
                await _pause(reactor, 0.05)
            else:
                latencies.append(time.perf_counter() - start)
            i += 1

    await defer.gatherResults([defer.ensureDeferred(loop(n)) for n in range(writers)])
    if errors:
        print(f"  {prefix}: {len(errors)} write(s) failed, first: {errors[0]}")
    return latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


class Cluster:
    """A cluster of C{size} fresh server processes, formed, with a SysAdmin client."""

    def __init__(self, reactor, size: int, workdir: str, leases: bool = True, source: str = REPO) -> None:
        hsm = SoftHSM.generate()
        ports = _free_ports(size)
        self.hosts = [f"127.0.0.1:{p}" for p in ports]
        self.processes = [_start(hsm, p, workdir, leases, source) for p in ports]
        self.client = KMSClient(reactor, self.hosts, APIKey.parse(hsm.sysadmin_api_key()), insecure=True)
        self.client._pool.maxPersistentPerHost = 64
        self._reactor = reactor

    async def form(self) -> None:
        await _form(self._reactor, self.client, self.hosts)

    async def stop(self) -> None:
        await self.client.close()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait()


async def _measure(reactor, size: int, seconds: float, workdir: str, leases: bool = True) -> dict:
    cluster = Cluster(reactor, size, workdir, leases)
    client, hosts = cluster.client, cluster.hosts
    results = {}
    try:
        await cluster.form()
        targets = [("leader", hosts[0])] + ([("follower", hosts[1])] if size > 1 else [])
        for where, host in targets:
            for writers in (1, 16, 64):
                await write_loops(reactor, client, host, writers, 0.5, f"warm-{where}-{writers}")
                latencies = await write_loops(reactor, client, host, writers, seconds, f"{where}-{writers}")
                results[(where, writers)] = (
                    len(latencies) / seconds,
                    _percentile(latencies, 0.5),
                    _percentile(latencies, 0.99),
                )
    finally:
        await cluster.stop()
    return results


def machine_line() -> str:
    """The line that opens every run: cores, processor, Python, load."""
    return (
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}"
    )


def _base_tree(rev: str, workdir: str) -> str:
    """The C{minkms} package of commit C{rev}, unpacked under C{workdir}; its directory."""
    target = os.path.join(workdir, "base")
    os.makedirs(target)
    try:
        archive = subprocess.run(["git", "archive", rev, "minkms"], cwd=REPO, capture_output=True)
    except OSError as e:
        raise SystemExit(f"write_path.py: cannot run git to unpack {rev}: {e.strerror}") from None
    if archive.returncode != 0:
        reason = archive.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SystemExit(f"write_path.py: cannot unpack {rev}: {reason[-1] if reason else 'git archive failed'}")
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    found = subprocess.run(
        [sys.executable, "-c", "import minkms; print(minkms.__file__)"],
        env=dict(os.environ, PYTHONPATH=target),
        cwd=target,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not found.startswith(target + os.sep):
        raise SystemExit(f"write_path.py: the base's servers would import minkms from {found or '?'}, not {target}")
    return target


async def _one_run(
    reactor, source: str, writers: int, seconds: float, workdir: str
) -> tuple[float, float, float, float]:
    """Writes/s, p50 and p99 (ms) and server CPU per write (µs) of C{writers} writers to a new 3-node cluster."""
    cluster = Cluster(reactor, 3, workdir, source=source)
    try:
        await cluster.form()
        leader = cluster.hosts[0]
        await write_loops(reactor, cluster.client, leader, writers, max(1.0, seconds / 5), "warm")
        pids = [process.pid for process in cluster.processes]
        cpu = sum(map(cpu_seconds, pids))
        latencies = await write_loops(reactor, cluster.client, leader, writers, seconds, "run")
        cpu = sum(map(cpu_seconds, pids)) - cpu
    finally:
        await cluster.stop()
    if not latencies:
        raise SystemExit("write_path.py: no write succeeded (see the node logs)")
    per_write = cpu * 1e6 / len(latencies)
    return len(latencies) / seconds, _percentile(latencies, 0.5), _percentile(latencies, 0.99), per_write


async def _against(reactor, args) -> None:
    """This tree against C{args.against}, alternating, one cluster at a time."""
    print(machine_line())
    print(
        f"new (this tree) against {args.against}: 3 nodes, {args.writers} writer(s) to the leader, "
        f"{args.seconds:g} s per run, {args.pairs} pair(s), one cluster at a time"
    )
    p50_ratios, cpu_ratios = [], []
    with tempfile.TemporaryDirectory(prefix="minkms-writeab-") as workdir:
        sources = {"new": REPO, "base": _base_tree(args.against, workdir)}
        for pair in range(args.pairs):
            order = ("new", "base") if pair % 2 == 0 else ("base", "new")
            runs = {}
            for name in order:
                runs[name] = await _one_run(reactor, sources[name], args.writers, args.seconds, workdir)
                rate, p50, p99, cpu = runs[name]
                print(
                    f"pair {pair + 1} {name:4}: {rate:7.0f} writes/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                    f"CPU {cpu:7,.0f} us/write",
                    flush=True,
                )
            p50_ratios.append(runs["new"][1] / runs["base"][1])
            cpu_ratios.append(runs["new"][3] / runs["base"][3])
    for label, ratios in (("p50", p50_ratios), ("CPU per write", cpu_ratios)):
        lower = sum(1 for r in ratios if r < 1)
        print(
            f"{label} new / base: median {statistics.median(ratios):.3f} "
            f"(pairs {', '.join(f'{r:.3f}' for r in ratios)}); new lower in {lower} of {len(ratios)}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


async def _main(reactor, args) -> None:
    print(machine_line())
    print(f"KEY:CREATE, committed and fsynced on a majority before each reply; {args.seconds:.0f} s per figure")
    with tempfile.TemporaryDirectory(prefix="minkms-writebench-") as workdir:
        single = await _measure(reactor, 1, args.seconds, workdir)
        triple = await _measure(reactor, 3, args.seconds, workdir)
        unleased = await _measure(reactor, 3, args.seconds, workdir, leases=False)
    for label, results in (("1 node ", single), ("3 nodes", triple), ("3, no lease", unleased)):
        for (where, writers), (rate, p50, p99) in sorted(results.items()):
            print(
                f"{label:11} via {where:8} {writers:3} writer(s): {rate:8.0f} writes/s  "
                f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
            )
    for writers in (1, 16, 64):
        base, replicated = single[("leader", writers)][0], triple[("leader", writers)][0]
        print(f"ratio 3 nodes / 1 node, {writers:2} writer(s): {replicated / base:.2f}")
    for writers in (1, 64):
        leased, bare = triple[("leader", writers)], unleased[("leader", writers)]
        print(
            f"lease cost, {writers:2} writer(s): throughput x{leased[0] / bare[0]:.2f}, "
            f"p50 {leased[1]:.2f} ms vs {bare[1]:.2f} ms without leases"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="per figure (5), or per run with --against (10)")
    parser.add_argument("--against", metavar="REV", help="compare this tree with commit REV (see above)")
    parser.add_argument("--pairs", type=int, default=6, help="with --against: runs of each (6)")
    parser.add_argument("--writers", type=int, default=1, help="with --against: concurrent writers (1)")
    args = parser.parse_args()
    if args.pairs < 1 or args.writers < 1 or (args.seconds is not None and args.seconds <= 0):
        parser.error("--pairs and --writers must be at least 1 and --seconds above 0")
    if args.against is None:
        args.seconds = 5.0 if args.seconds is None else args.seconds
        task.react(lambda reactor: defer.ensureDeferred(_main(reactor, args)))
    else:
        args.seconds = 10.0 if args.seconds is None else args.seconds
        task.react(lambda reactor: defer.ensureDeferred(_against(reactor, args)))


if __name__ == "__main__":
    main()
