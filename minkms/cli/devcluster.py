"""
C{minkms cluster --dev}: a local cluster on embedded defaults, for trying
minkms and for README's first command.

It makes one soft HSM key, starts N C{minkms server --dev} processes on
loopback (each with its own temporary volume and self-signed certificate,
all with the same HSM key), joins them with C{CLUSTER:ADDNODE} exactly as
C{minkms add} does, prints the endpoints and the API key, and stops them
all on Ctrl-C (or SIGTERM, SIGHUP, SIGQUIT).  Volumes and logs live in one
temporary directory of the run, removed on exit unless a node failed.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from twisted.internet import defer, task

from minkms.apikey import APIKey
from minkms.cli.output import ArgumentParser, CLIError
from minkms.client import ClientError, KMSClient
from minkms.errors import KMSError
from minkms.hsm import SoftHSM
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import CLUSTER_ADDNODE


def _start_node(hsm_key: str, port: int, run_dir: str, index: int) -> subprocess.Popen:
    env = dict(os.environ, MINIO_KMS_HSM_KEY=hsm_key)
    log = open(os.path.join(run_dir, f"node{index}.log"), "ab")
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "minkms.cli.main",
                "server",
                os.path.join(run_dir, f"node{index}"),
                "--dev",
                "--host",
                f"127.0.0.1:{port}",
                "--address",
                f"127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        log.close()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when this process dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _check_ports(ports: list[int]) -> None:
    """Fail at once, in words, when a port the cluster needs is taken."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise CLIError(
                    f"port {port} is in use (is another minkms cluster still running?); stop it or pass --port"
                ) from None


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


async def _wait_up(reactor, client: KMSClient, host: str, process, log_path: str, deadline: float) -> None:
    """Wait until C{host} has a leader, i.e. can commit writes."""
    while True:
        if process.poll() is not None:
            why = _last_line(log_path)
            raise CLIError(f"node {host} exited with status {process.returncode}" + (f": {why}" if why else ""))
        try:
            await client.get("/v1/health/ready?write", host=host)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise CLIError(f"node {host} did not come up in time") from None
            await task.deferLater(reactor, 0.2, lambda: None)


async def _form(reactor, hsm: SoftHSM, ports: list[int], processes, run_dir: str) -> None:
    hosts = [f"127.0.0.1:{p}" for p in ports]
    client = KMSClient(reactor, hosts[:1], APIKey.parse(hsm.sysadmin_api_key()), insecure=True)
    deadline = time.monotonic() + 60
    try:
        for i, (host, process) in enumerate(zip(hosts, processes)):
            await _wait_up(reactor, client, host, process, os.path.join(run_dir, f"node{i}.log"), deadline)
        for host in hosts[1:]:
            await client.call(CLUSTER_ADDNODE, pb.AddClusterNodeRequest(Host=host))
    except (KMSError, ClientError) as e:
        raise CLIError(f"could not form the cluster: {e}") from None
    finally:
        await client.close()


def _cli_command() -> str:
    """How to run this very C{minkms} from any directory of the user's shell."""
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "minkms")
    if not os.path.exists(beside) or shutil.which("minkms") == beside:
        return "minkms"
    return os.path.abspath(beside)


class _Stop(Exception):
    """A signal asked the cluster to stop."""


def _stop_on_signal(signum, frame):
    raise _Stop(signum)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def run_dev_cluster(argv: list[str]) -> int:
    """Start, join and watch a local cluster until interrupted."""
    parser = ArgumentParser(prog="minkms cluster", description=run_dev_cluster.__doc__)
    parser.add_argument(
        "--dev",
        action="store_true",
        required=True,
        help="embedded defaults: self-signed certs, soft HSM, temporary volumes",
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--port", type=int, default=7373, help="port of node 0; the others follow")
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 7:
        raise CLIError("--nodes must be between 1 and 7")
    import tempfile

    ports = [args.port + i for i in range(args.nodes)]
    _check_ports(ports)
    run_dir = tempfile.mkdtemp(prefix="minkms-cluster-")
    hsm = SoftHSM.generate()
    processes = []
    outcome = {}

    def stop_all() -> bool:
        """Stop every node; say whether all of them stopped cleanly."""
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return all(p.returncode == 0 for p in processes)

    def finish(clean: bool) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if clean and stop_all():
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            stop_all()
            sys.stderr.write(f"minkms: node logs are kept in {run_dir}\n")

    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_on_signal)
    try:
        processes.extend(_start_node(hsm.to_text(), p, run_dir, i) for i, p in enumerate(ports))

        async def form(reactor):
            try:
                await _form(reactor, hsm, ports, processes, run_dir)
                outcome["formed"] = True
            except CLIError as e:
                outcome["error"] = str(e)

        try:
            task.react(lambda reactor: defer.ensureDeferred(form(reactor)), [])
        except SystemExit:
            pass
        # Twisted's handlers stay installed after the reactor stopped: put ours back.
        for signum in STOP_SIGNALS:
            signal.signal(signum, _stop_on_signal)
        if "error" in outcome:
            finish(clean=False)
            raise CLIError(outcome["error"])
        if "formed" not in outcome:
            finish(clean=True)
            return 130
        _announce(args.nodes, ports, hsm, run_dir)
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        finish(clean=False)
        raise CLIError("a node exited")
    except _Stop:
        finish(clean=True)
        return 0
    finally:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)


def _announce(count: int, ports: list[int], hsm: SoftHSM, run_dir: str) -> None:
    endpoints = ",".join(f"https://127.0.0.1:{p}" for p in ports)
    print(f"Cluster of {count} node(s) is up (self-signed certificates: use -k).")
    print(f"Endpoint    {endpoints}")
    print(f"API Key     {hsm.sysadmin_api_key()}")
    print(f"Logs        {run_dir} (removed on exit)")
    print()
    print(f"  export MINIO_KMS_SERVER={endpoints}")
    print(f"  export MINIO_KMS_API_KEY={hsm.sysadmin_api_key()}")
    print(f"  {_cli_command()} stat -k")
    print("\nPress Ctrl-C to stop the cluster.", flush=True)
