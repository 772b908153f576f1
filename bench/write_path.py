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
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

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


def _start(hsm: SoftHSM, port: int, workdir: str, leases: bool = True) -> subprocess.Popen:
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
        env=dict(os.environ, MINIO_KMS_HSM_KEY=hsm.to_text(), PYTHONPATH=REPO),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
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


async def _writers(reactor, client, host: str, writers: int, seconds: float, prefix: str):
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


async def _measure(reactor, size: int, seconds: float, workdir: str, leases: bool = True) -> dict:
    hsm = SoftHSM.generate()
    ports = _free_ports(size)
    hosts = [f"127.0.0.1:{p}" for p in ports]
    processes = [_start(hsm, p, workdir, leases) for p in ports]
    client = KMSClient(reactor, hosts, APIKey.parse(hsm.sysadmin_api_key()), insecure=True)
    client._pool.maxPersistentPerHost = 64
    results = {}
    try:
        await _form(reactor, client, hosts)
        targets = [("leader", hosts[0])] + ([("follower", hosts[1])] if size > 1 else [])
        for where, host in targets:
            for writers in (1, 16, 64):
                await _writers(reactor, client, host, writers, 0.5, f"warm-{where}-{writers}")
                latencies = await _writers(reactor, client, host, writers, seconds, f"{where}-{writers}")
                results[(where, writers)] = (
                    len(latencies) / seconds,
                    _percentile(latencies, 0.5),
                    _percentile(latencies, 0.99),
                )
    finally:
        await client.close()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
    return results


async def _main(reactor, args) -> None:
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}"
    )
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
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(_main(reactor, args)))


if __name__ == "__main__":
    main()
