"""
C{minkms cluster --dev}: a local cluster on embedded defaults, for trying
minkms and for README's first command.

It makes one soft HSM key, starts N C{minkms server --dev} processes on
loopback (each with its own temporary volume and self-signed certificate,
all with the same HSM key), joins them with C{CLUSTER:ADDNODE} exactly as
C{minkms add} does, prints the endpoints and the API key, and stops them
all on Ctrl-C.
"""

import os
import signal
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


def _start_node(hsm_key: str, port: int, log_path: str) -> subprocess.Popen:
    env = dict(os.environ, MINIO_KMS_HSM_KEY=hsm_key)
    log = open(log_path, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "minkms.cli.main", "server", "--dev",
         "--host", f"127.0.0.1:{port}", "--address", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )


async def _wait_up(reactor, client: KMSClient, host: str, process, deadline: float) -> None:
    """Wait until C{host} has a leader, i.e. can commit writes."""
    while True:
        if process.poll() is not None:
            raise CLIError(f"node {host} exited with status {process.returncode}; see its log")
        try:
            await client.get("/v1/health/ready?write", host=host)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise CLIError(f"node {host} did not come up in time") from None
            await task.deferLater(reactor, 0.2, lambda: None)


async def _form(reactor, hsm: SoftHSM, ports: list[int], processes) -> None:
    hosts = [f"127.0.0.1:{p}" for p in ports]
    client = KMSClient(reactor, hosts[:1], APIKey.parse(hsm.sysadmin_api_key()), insecure=True)
    deadline = time.monotonic() + 30
    try:
        for host, process in zip(hosts, processes):
            await _wait_up(reactor, client, host, process, deadline)
        for host in hosts[1:]:
            await client.call(1, pb.AddClusterNodeRequest(Host=host))
    except (KMSError, ClientError) as e:
        raise CLIError(f"could not form the cluster: {e}") from None
    finally:
        await client.close()


def _cli_command() -> str:
    """How to run this very C{minkms} from the user's shell."""
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "minkms")
    if shutil.which("minkms") == beside or not os.path.exists(beside):
        return "minkms"
    return os.path.relpath(beside) if not os.path.relpath(beside).startswith("..") else beside


def _exit_quietly(signum, frame):
    raise KeyboardInterrupt


def run_dev_cluster(argv: list[str]) -> int:
    """Start, join and watch a local cluster until interrupted."""
    parser = ArgumentParser(prog="minkms cluster", description=run_dev_cluster.__doc__)
    parser.add_argument("--dev", action="store_true", required=True,
                        help="embedded defaults: self-signed certs, soft HSM, temporary volumes")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--port", type=int, default=7373, help="port of node 0; the others follow")
    parser.add_argument("--logs", default=None, help="directory for node logs (default: a temp dir)")
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 7:
        raise CLIError("--nodes must be between 1 and 7")
    import tempfile

    logs = args.logs or tempfile.mkdtemp(prefix="minkms-cluster-logs-")
    os.makedirs(logs, exist_ok=True)
    hsm = SoftHSM.generate()
    ports = [args.port + i for i in range(args.nodes)]
    processes = [_start_node(hsm.to_text(), p, os.path.join(logs, f"node{i}.log")) for i, p in enumerate(ports)]

    def stop_all(*_):
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    failure = []

    async def form(reactor):
        try:
            await _form(reactor, hsm, ports, processes)
        except CLIError as e:
            failure.append(str(e))

    try:
        task.react(lambda reactor: defer.ensureDeferred(form(reactor)), [])
    except SystemExit:
        pass
    if failure:
        stop_all()
        raise CLIError(f"{failure[0]}; node logs are in {logs}")
    endpoints = ",".join(f"https://127.0.0.1:{p}" for p in ports)
    print(f"Cluster of {args.nodes} node(s) is up (self-signed certificates: use -k).")
    print(f"Endpoint    {endpoints}")
    print(f"API Key     {hsm.sysadmin_api_key()}")
    print(f"Logs        {logs}")
    print()
    print(f"  export MINIO_KMS_SERVER={endpoints}")
    print(f"  export MINIO_KMS_API_KEY={hsm.sysadmin_api_key()}")
    print(f"  {_cli_command()} stat -k")
    print("\nPress Ctrl-C to stop the cluster.", flush=True)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_quietly)
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        raise CLIError(f"a node exited; node logs are in {logs}")
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()
