"""
Real servers for tests: an in-process node on loopback TLS (port 0, a
temporary volume), and real server processes for cluster tests.
"""

import inspect
import os
import signal
import socket
import subprocess
import sys
import time

from twisted.internet import reactor, task

from minkms.apikey import APIKey
from minkms.client import ClientError, KMSClient
from minkms.errors import KMSError
from minkms.hsm import SoftHSM
from minkms.server import service
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import CLUSTER_ADDNODE, CLUSTER_STATUS
from tests.support import REPO, cli_env, stop_process


class NullOut:
    """Where an in-process server's banner goes in tests."""

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_run(count: int) -> int:
    """
    The first of C{count} consecutive TCP ports on 127.0.0.1 that are free
    right now, below the kernel's ephemeral range (32768 and up), so that
    the outgoing connections of other tests running beside this one cannot
    take one of them before the test binds it.
    """
    import random

    rng = random.Random()
    for _ in range(1000):
        first = rng.randrange(20000, 32768 - count)
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports below 32768")


class InProcessServer:
    """
    A node built by L{service.makeService} exactly as C{minkms server}
    does, serving on 127.0.0.1 in the test's reactor.
    """

    def __init__(
        self, testcase, hsm: SoftHSM | None = None, volume: str | None = None, extra_args=(), port: int | None = None
    ):
        self.hsm = hsm or SoftHSM.generate()
        self.volume = volume or testcase.mktemp()
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        options = service.Options()
        options.parseOptions([self.volume, "--dev", "--host", self.host, "--address", self.host, *extra_args])
        options["volume"] = self.volume
        self.out = NullOut()
        self.service = service.makeService(
            options, reactor=reactor, environ={"MINIO_KMS_HSM_KEY": self.hsm.to_text()}, out=self.out
        )
        self.node = self.service.node
        self.service.stop_reactor_on_failure = False
        self.service.privilegedStartService()
        self.service.startService()
        testcase.addCleanup(self.stop)
        self.api_key = APIKey.parse(self.hsm.sysadmin_api_key())

    def stop(self):
        if self.service.running:
            return self.service.stopService()

    def client(self, api_key: APIKey | str | None = "sysadmin") -> KMSClient:
        """A client of this server (SysAdmin by default; None: no certificate)."""
        if api_key == "sysadmin":
            api_key = self.api_key
        elif isinstance(api_key, str):
            api_key = APIKey.parse(api_key)
        return KMSClient(reactor, [self.host], api_key, insecure=True)

    async def wait_ready(self, timeout=10.0):
        """Wait until the node has a leader (writes can commit)."""
        deadline = time.monotonic() + timeout
        while not self.node.ready(True):
            if time.monotonic() > deadline:
                raise AssertionError("node did not become ready")
            await task.deferLater(reactor, 0.02, lambda: None)


async def in_process_cluster(testcase, size: int) -> tuple[list[InProcessServer], KMSClient]:
    """
    C{size} in-process nodes joined with CLUSTER:ADDNODE as C{minkms add}
    does (the first one leads), and a SysAdmin client of the first.
    """
    first = InProcessServer(testcase)
    servers = [first] + [InProcessServer(testcase, hsm=first.hsm) for _ in range(size - 1)]
    for server in servers:
        await server.wait_ready()
    client = first.client()
    testcase.addCleanup(client.close)
    for server in servers[1:]:
        await client.call(CLUSTER_ADDNODE, pb.AddClusterNodeRequest(Host=server.host))
    return servers, client


async def until(condition, what: str, timeout: float = 60.0, interval: float = 0.05):
    """
    Wait until C{condition()} (a value, or an awaitable of one) is true and
    return it; fail saying that C{what} did not happen within C{timeout}
    seconds (generous: a loaded machine must not fail a test).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await task.deferLater(reactor, interval, lambda: None)


async def client_call(client: KMSClient, *args, **kwargs):
    """Call and close the client's idle connections afterwards."""
    try:
        return await client.call(*args, **kwargs)
    finally:
        await client.close()


def write_config(directory: str, cluster: str = "", extra: str = "") -> str:
    """
    A config.yaml with a fresh certificate, an optional C{cluster:} section
    and C{extra} YAML text (further sections) appended as written.
    """
    from tests.support import write_server_certificate

    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    key, cert = write_server_certificate(directory)
    path = os.path.join(directory, "config.yaml")
    with open(path, "w") as f:
        f.write(f"version: v1\ntls:\n  certs:\n  - key: {key}\n    cert: {cert}\n")
        if cluster:
            f.write("cluster:\n" + "".join(f"  {line}\n" for line in cluster.splitlines()))
        f.write(extra)
    return path


class ProcessNode:
    """
    A real C{minkms server} process on 127.0.0.1:PORT with its own volume;
    it can be killed (SIGKILL) and restarted on the same volume and port.
    """

    def __init__(
        self,
        testcase,
        hsm: SoftHSM,
        port: int | None = None,
        volume: str | None = None,
        extra_args=(),
        environ: dict | None = None,
        preexec_fn=None,
    ):
        self.hsm = hsm
        self.environ = environ if environ is not None else {"MINIO_KMS_HSM_KEY": hsm.to_text()}
        self.preexec_fn = preexec_fn
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        base = os.path.abspath(testcase.mktemp())
        os.makedirs(base)
        self.volume = volume or os.path.join(base, "volume")
        self.log_path = os.path.join(base, "server.log")
        self.process = None
        self.paused = False
        testcase.addCleanup(self.stop)

    def start(self):
        """Start the process (returns at once; see L{wait_up})."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "minkms.cli.main",
                "server",
                self.volume,
                "--dev",
                "--host",
                self.host,
                "--address",
                f"127.0.0.1:{self.port}",
                *self.extra_args,
            ],
            env=cli_env(**self.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=self.preexec_fn,
        )
        log.close()
        return self

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    async def wait_up(self, client: KMSClient, timeout=30.0, write=False):
        """Wait until the node answers (and, with C{write}, has a leader)."""
        path = "/v1/health/ready?write" if write else "/version"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"node {self.host} exited:\n{self.log()}")
            try:
                await client.get(path, host=self.host)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {self.host} not up in time:\n{self.log()}") from None
                await task.deferLater(reactor, 0.1, lambda: None)

    def kill(self):
        """SIGKILL: no shutdown, unsynced data lost."""
        self.process.kill()
        self.process.wait()

    def pause(self):
        """SIGSTOP: the process keeps its sockets but answers nothing until L{resume}."""
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        """SIGCONT after L{pause}."""
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self):
        if self.process is not None:
            if self.paused and self.process.poll() is None:
                self.resume()
            stop_process(self.process)


async def form_cluster(testcase, size=3, extra_args=()):
    """Start C{size} process nodes and join them as C{minkms add} does."""
    hsm = SoftHSM.generate()
    nodes = [ProcessNode(testcase, hsm, extra_args=extra_args).start() for _ in range(size)]
    client = KMSClient(
        reactor, [n.host for n in nodes], APIKey.parse(hsm.sysadmin_api_key()), insecure=True, timeout=10
    )
    testcase.addCleanup(client.close)
    for node in nodes:
        await node.wait_up(client, write=True)
    for node in nodes[1:]:
        await client.call(CLUSTER_ADDNODE, pb.AddClusterNodeRequest(Host=node.host), host=nodes[0].host)
    return nodes, client


async def leader_of(client: KMSClient, nodes: list[ProcessNode]) -> ProcessNode | None:
    """The node that some answering node reports as Leader, if any."""
    for node in nodes:
        try:
            status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest(), host=node.host)
        except (KMSError, ClientError):
            continue
        for server in status.NodesUp.values():
            if server.Role == "Leader":
                return next(n for n in nodes if n.host == server.Host)
    return None
