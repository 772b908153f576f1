"""
Scale: one node holding many keys (default 100,000 in 100 enclaves).

Prints, for that node: the size of C{kms.db}; the time and memory of
recovery (C{load_volume} and the state machine's restore, in a fresh
process) and of a real server's start-up until it answers
C{/v1/health/ready?write}; the time to take a snapshot (the state
machine's dump, the volume append), and the longest reactor turn a node's
dump takes (a slice per turn); the time to compact; how long a new member
takes to join (C{minkms add}, which sends it the snapshot by chunked
InstallSnapshot) until it decrypts with the newest key; and the
C{KEY:DECRYPT} latency at that size next to a node holding 100 keys.

    .venv/bin/python bench/scale.py                         # 100,000 keys in 100 enclaves
    .venv/bin/python bench/scale.py --keys 10000 --decrypts 500
    .venv/bin/python bench/scale.py --profile /tmp/scale    # cProfile of recovery and compaction

Figures only: nothing here fails a build.  The state is built through the
code paths a node uses: the state machine applies C{KEY:CREATE} commands
(fresh material each), its snapshot is appended to a real volume founded
as C{minkms server} founds one, and the volume compacts.
"""

import argparse
import cProfile
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import read_path  # noqa: E402
from read_path import REPO, client_context, frame, free_port, http_request, stop  # noqa: E402

from minkms.apikey import APIKey  # noqa: E402
from minkms.hsm import SoftHSM  # noqa: E402
from minkms.raft.config import encode_config, single_node_config  # noqa: E402
from minkms.raft.types import Snapshot, SnapshotMeta  # noqa: E402
from minkms.server.membership import founding_records  # noqa: E402
from minkms.server.slices import SlicedWork  # noqa: E402
from minkms.state.changes import CreateEnclave, CreateKey  # noqa: E402
from minkms.state.machine import StateMachine  # noqa: E402
from minkms.storage.startup import DB_NAME, load_volume  # noqa: E402
from minkms.storage.volume import InlineRunner, open_volume_now  # noqa: E402
from minkms.wire import kms_pb2 as pb  # noqa: E402

AAD = b'{"bucket":"photos","object":"2025/01/01/img-0001.jpg"}'
GENERATE, DECRYPT = 207, 206
MiB = 2**20


def enclave_name(n: int) -> str:
    return f"enclave-{n:03d}"


def key_name(n: int) -> str:
    return f"key-{n:07d}"


def key_place(n: int, enclaves: int) -> tuple[str, str]:
    """The enclave and name of key C{n}: keys are dealt round the enclaves."""
    return enclave_name(n % enclaves), key_name(n)


def rss(pid="self") -> tuple[int, int]:
    """Resident and peak resident memory of a process, in bytes (Linux /proc)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def reset_peak() -> None:
    """Start counting this process's peak memory afresh (Linux 4.0+; else nothing)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


# --- building the state ------------------------------------------------------


def build(volume_dir: str, hsm: SoftHSM, host: str, keys: int, enclaves: int) -> dict:
    """
    Found a volume as C{minkms server VOLUME --host HOST} would, then give it
    C{keys} keys in C{enclaves} enclaves: applied by the state machine,
    snapshotted, appended and compacted through the volume.
    """
    volume = open_volume_now(volume_dir, hsm, runner=InlineRunner(), founding=founding_records(host))
    founding = volume.recovered.entries[-1]
    config = encode_config(single_node_config(0, host, volume.cluster_id))
    machine = StateMachine()
    caller = APIKey.parse(hsm.sysadmin_api_key()).identity
    now = time.time_ns()
    t0 = time.perf_counter()
    commands = [CreateEnclave(caller=caller, sysadmin=True, time=now, name=enclave_name(e)) for e in range(enclaves)]
    commands += (
        CreateKey(
            caller=caller,
            sysadmin=True,
            time=now,
            enclave=enclave,
            name=name,
            key_type="AES256",
            add_version=False,
            material=os.urandom(32),
        )
        for enclave, name in (key_place(n, enclaves) for n in range(keys))
    )
    for command in commands:
        error = machine.apply(command)
        if error is not None:
            raise SystemExit(f"building the state failed: {error}")
    applied = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = machine.snapshot()
    dumped = time.perf_counter() - t0
    copy, pause, sliced = pause_during_dump(machine)
    snapshot = Snapshot(SnapshotMeta(founding.index, founding.term, config), data)
    t0 = time.perf_counter()
    _wait(volume.save_snapshot(snapshot.meta, snapshot.data))
    appended = time.perf_counter() - t0
    _wait(volume.close())
    return {
        "apply_s": applied,
        "dump_s": dumped,
        "snapshot_bytes": len(data),
        "append_s": appended,
        "copy_s": copy,
        "pause_s": pause,
        "sliced_s": sliced,
    }


class _Turns:
    """Reactor turns, as much of a reactor as L{SlicedWork} uses: C{callLater(0)} runs in the next turn."""

    def __init__(self) -> None:
        self.calls: list = []

    def callLater(self, delay, f, *args):
        self.calls.append((f, args))

    def turn(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


def pause_during_dump(machine: StateMachine) -> tuple[float, float, float]:
    """
    A snapshot as a node takes it: the copy on the reactor thread, then the
    dump a slice per reactor turn (L{SlicedWork}).  Returns the copy's
    time, the longest turn the dump took, and its time in all.
    """
    t0 = time.perf_counter()
    frozen = machine.frozen()
    copied = time.perf_counter() - t0
    turns = _Turns()
    done: list = []
    t0 = time.perf_counter()
    SlicedWork(turns).join(frozen.snapshot_pieces()).addBoth(done.append)
    longest = 0.0
    while not done:
        start = time.perf_counter()
        turns.turn()
        longest = max(longest, time.perf_counter() - start)
    return copied, longest, time.perf_counter() - t0


def _wait(d):
    """The result of a Deferred that has fired (the volume runs inline here)."""
    box = []
    d.addBoth(box.append)
    if not box:
        raise RuntimeError("volume call did not finish inline")
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


# --- child processes: one measurement each, in a process of its own ----------


def child_recover(args) -> None:
    """Recover the volume and restore the state machine, as a node's start does."""
    hsm = SoftHSM.parse(os.environ["MINIO_KMS_HSM_KEY"])
    profiler = cProfile.Profile() if args.profile else None
    before, _ = rss()
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    loaded = load_volume(args.volume, hsm)
    t1 = time.perf_counter()
    _, load_peak = rss()
    machine = StateMachine()
    if loaded.state.snapshot is not None:
        machine.restore(loaded.state.snapshot.data)
    t2 = time.perf_counter()
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    now, peak = rss()
    print(
        json.dumps(
            {
                "load_s": t1 - t0,
                "restore_s": t2 - t1,
                "rss_before": before,
                "load_peak": load_peak,
                "rss": now,
                "peak": peak,
            }
        )
    )


def child_compact(args) -> None:
    """Open the volume, then compact it: the time and the memory compaction adds."""
    hsm = SoftHSM.parse(os.environ["MINIO_KMS_HSM_KEY"])
    volume = open_volume_now(args.volume, hsm, runner=InlineRunner())
    size_before = volume.size
    opened, _ = rss()
    reset_peak()
    profiler = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    _wait(volume.compact())
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    took = time.perf_counter() - t0
    _, peak = rss()
    size_after = volume.size
    _wait(volume.close())
    print(
        json.dumps(
            {
                "compact_s": took,
                "rss_opened": opened,
                "peak": peak,
                "size_before": size_before,
                "size_after": size_after,
            }
        )
    )


def run_child(kind: str, volume: str, hsm: SoftHSM, profile: str | None) -> dict:
    command = [sys.executable, os.path.abspath(__file__), kind, volume]
    if profile:
        command += ["--profile", profile]
    env = dict(os.environ, MINIO_KMS_HSM_KEY=hsm.to_text(), PYTHONPATH=REPO)
    out = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- real server processes ---------------------------------------------------


class Server:
    """A C{minkms server VOLUME --dev} process on loopback."""

    def __init__(
        self, workdir: str, name: str, hsm: SoftHSM, volume: str | None = None, port: int | None = None
    ) -> None:
        self.hsm = hsm
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.volume = volume or os.path.join(workdir, name)
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.ctx = client_context(hsm.sysadmin_api_key(), tempfile.mkdtemp(dir=workdir))
        self.process = None
        self.connection = None

    def start(self) -> float:
        """Start the process; the seconds until it answers a write-ready health check."""
        env = dict(os.environ, MINIO_KMS_HSM_KEY=self.hsm.to_text(), PYTHONPATH=REPO)
        env = {k: v for k, v in env.items() if k not in ("MINIO_KMS_SERVER", "MINIO_KMS_API_KEY")}
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "minkms.cli.main",
                    "server",
                    self.volume,
                    "--dev",
                    "--address",
                    self.host,
                    "--host",
                    self.host,
                ],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        read_path.wait_ready(self.ctx, self.port, self.process, timeout=300)
        return time.perf_counter() - t0

    def call(self, path: str, body: bytes) -> tuple[int, bytes]:
        """One request on this server's kept-alive connection."""
        if self.connection is None:
            import socket

            sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self.connection = self.ctx.wrap_socket(sock)
        self.connection.sendall(http_request(path, body, self.host))
        return read_path.read_response_sync(self.connection)

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.process is not None:
            stop(self.process)


def ciphertexts(server: Server, places: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """A DEK generated under each key of C{places}: (request path, decrypt body)."""
    out = []
    for enclave, name in places:
        path = f"/v1/kms/{enclave}"
        status, body = server.call(path, frame(GENERATE, pb.GenerateKeyRequest(Name=name, AssociatedData=AAD)))
        if status != 200:
            raise SystemExit(f"KEY:GENERATE {enclave}/{name}: {status} {body[:200]!r}")
        dek = pb.GenerateKeyResponse.FromString(body[6:])
        request = pb.DecryptRequest(Name=name, Ciphertext=dek.Ciphertext, AssociatedData=AAD)
        out.append((path, frame(DECRYPT, request)))
    return out


def decrypt_latencies(server: Server, requests, count: int) -> list[float]:
    """Seconds per C{KEY:DECRYPT}, one request in flight, cycling through C{requests}."""
    latencies = []
    for i in range(count):
        path, body = requests[i % len(requests)]
        t0 = time.perf_counter()
        status, answer = server.call(path, body)
        latencies.append(time.perf_counter() - t0)
        if status != 200:
            raise SystemExit(f"KEY:DECRYPT: {status} {answer[:200]!r}")
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def join(workdir: str, hsm: SoftHSM, member: Server, newest: tuple[str, str]) -> dict:
    """
    Start a fresh node, C{minkms add} it to C{member}'s cluster, and time
    until it decrypts with the newest key itself.
    """
    newcomer = Server(workdir, "joiner", hsm)
    try:
        newcomer.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
        env.update(MINIO_KMS_SERVER=f"https://{member.host}", MINIO_KMS_API_KEY=hsm.sysadmin_api_key(), PYTHONPATH=REPO)
        probe = ciphertexts(member, [newest])[0]
        t0 = time.perf_counter()
        added = subprocess.run(
            [sys.executable, "-m", "minkms.cli.main", "add", "-k", newcomer.host],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        t1 = time.perf_counter()
        if added.returncode:
            raise SystemExit(f"minkms add failed: {added.stderr.strip()}")
        deadline = time.monotonic() + 600
        while True:
            try:
                status, _ = newcomer.call(*probe)
            except OSError:
                newcomer.connection = None
                status = None
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the new member never served the newest key")
            time.sleep(0.05)
        t2 = time.perf_counter()
        now, peak = rss(newcomer.process.pid)
        size = os.path.getsize(os.path.join(newcomer.volume, DB_NAME))
        return {"add_s": t1 - t0, "serving_s": t2 - t0, "rss": now, "peak": peak, "db": size}
    finally:
        newcomer.stop()


# --- the run -----------------------------------------------------------------


def serve(workdir: str, name: str, hsm: SoftHSM, volume: str, port: int, places, args):
    """Start a server on a built volume: it, its start-up seconds, and the decrypt requests to time."""
    server = Server(workdir, name, hsm, volume, port)
    started = server.start()
    rng = random.Random(1)
    sample = [places[rng.randrange(len(places))] for _ in range(min(args.sample_keys, len(places)))]
    return server, started, ciphertexts(server, sample)


def orchestrate(args) -> None:
    print(f"machine: {read_path.machine()}; {read_path.load_average()}")
    workdir = tempfile.mkdtemp(prefix="minkms-scale-")
    hsm = SoftHSM.generate()
    small_keys = min(args.baseline_keys, args.keys)
    sizes = {"large": (args.keys, args.enclaves), "small": (small_keys, min(args.enclaves, small_keys))}
    servers = {}
    try:
        for label, (keys, enclaves) in sizes.items():
            volume = os.path.join(workdir, f"{label}-volume")
            port = free_port()
            built = build(volume, hsm, f"127.0.0.1:{port}", keys, enclaves)
            profile = os.path.join(args.profile, f"{label}-") if args.profile else None
            compacted = run_child("compact", volume, hsm, profile and profile + "compact.prof")
            recovered = run_child("recover", volume, hsm, profile and profile + "recover.prof")
            db = os.path.getsize(os.path.join(volume, DB_NAME))
            print(f"\n{keys} keys in {enclaves} enclaves")
            print(
                f"  build: apply {built['apply_s']:.2f} s; snapshot: dump {built['dump_s']:.2f} s "
                f"({mib(built['snapshot_bytes'])}), volume append {built['append_s']:.2f} s"
            )
            print(
                f"  snapshot as a node takes it: copy {1000 * built['copy_s']:.1f} ms on the reactor thread, "
                f"then the dump a slice per turn: {built['sliced_s']:.2f} s in all, the longest turn "
                f"{1000 * built['pause_s']:.1f} ms"
            )
            print(
                f"  compaction: {compacted['compact_s']:.2f} s, {mib(compacted['size_before'])} -> "
                f"{mib(compacted['size_after'])}; process RSS {mib(compacted['rss_opened'])} after open, "
                f"peak during compaction {mib(compacted['peak'])}"
            )
            print(f"  kms.db: {db} bytes ({mib(db)}), {db / max(keys, 1):.0f} bytes per key")
            print(
                f"  recovery (fresh process): load_volume {recovered['load_s']:.2f} s, state restore "
                f"{recovered['restore_s']:.2f} s; RSS {mib(recovered['rss_before'])} before, peak "
                f"{mib(recovered['load_peak'])} by the end of load_volume, {mib(recovered['rss'])} after "
                f"the restore, peak {mib(recovered['peak'])}"
            )
            places = [key_place(n, enclaves) for n in range(keys)]
            server, started, requests = serve(workdir, label, hsm, volume, port, places, args)
            servers[label] = (server, requests, places)
            now, peak = rss(server.process.pid)
            print(f"  server start-up until ready for writes: {started:.2f} s; RSS {mib(now)}, peak {mib(peak)}")
        latencies = {label: [] for label in servers}
        rounds = 5
        for _ in range(rounds):
            for label, (server, requests, _) in servers.items():
                latencies[label] += decrypt_latencies(server, requests, max(1, args.decrypts // rounds))
        print(f"\nKEY:DECRYPT, one request in flight, {args.sample_keys} random keys, {rounds} interleaved rounds")
        means = {}
        for label, values in latencies.items():
            means[label] = statistics.mean(values)
            print(
                f"  {sizes[label][0]:>7} keys: mean {1000 * means[label]:.3f} ms  p50 "
                f"{1000 * percentile(values, 50):.3f} ms  p99 {1000 * percentile(values, 99):.3f} ms "
                f"({len(values)} requests)"
            )
        print(f"  ratio of means, {args.keys} keys / {small_keys} keys: {means['large'] / means['small']:.2f}")
        servers.pop("small")[0].stop()
        if args.join:
            large, _, places = servers["large"]
            joined = join(workdir, hsm, large, places[-1])
            print(
                f"\njoin of a new member to the {args.keys}-key node: minkms add returned after "
                f"{joined['add_s']:.2f} s; the new member served the newest key after "
                f"{joined['serving_s']:.2f} s; its kms.db {mib(joined['db'])}, RSS {mib(joined['rss'])}, "
                f"peak {mib(joined['peak'])}"
            )
        print(f"\n{read_path.load_average()}; server logs in {workdir}")
    finally:
        for server, _, _ in servers.values():
            server.stop()
        for name in os.listdir(workdir):
            if os.path.isdir(os.path.join(workdir, name)):
                shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="child")
    for name in ("recover", "compact"):
        child = sub.add_parser(name, help=argparse.SUPPRESS)
        child.add_argument("volume")
        child.add_argument("--profile")
    parser.add_argument("--keys", type=int, default=100_000, help="keys on the large node (default 100,000)")
    parser.add_argument("--enclaves", type=int, default=100, help="enclaves they are dealt into (default 100)")
    parser.add_argument("--baseline-keys", type=int, default=100, help="keys on the node compared with (100)")
    parser.add_argument("--decrypts", type=int, default=2000, help="KEY:DECRYPT requests per node (2000)")
    parser.add_argument("--sample-keys", type=int, default=100, help="distinct keys decrypted with (100)")
    parser.add_argument("--no-join", dest="join", action="store_false", help="skip the new member's join")
    parser.add_argument("--profile", help="directory for cProfile output of recovery and compaction")
    args = parser.parse_args(argv)
    if args.child == "recover":
        return child_recover(args)
    if args.child == "compact":
        return child_compact(args)
    if args.keys < 1 or args.enclaves < 1:
        parser.error("--keys and --enclaves must be positive")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    orchestrate(args)


if __name__ == "__main__":
    main()
