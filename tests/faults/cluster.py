"""
A cluster of real C{minkms server} processes for the fault suite.

Node i listens on 127.0.0.(i+2) (127.0.0.1 stays the clients' address)
and advertises a second port on the same address, where a
L{tests.faults.proxy.LinkProxy} forwards peer traffic to it; clients dial
the node directly.  One node's volume can sit on a small tmpfs so that the
nemesis can fill its disk.
"""

import collections
import os
import shutil
import signal
import subprocess
import sys

from twisted.internet import defer, reactor, task

from minkms.apikey import APIKey
from minkms.client import ClientError, KMSClient
from minkms.errors import KMSError
from minkms.hsm import SoftHSM
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import CLUSTER_ADDNODE, CLUSTER_STATUS, ENCLAVE_CREATE
from tests.harness import ProcessNode, write_config
from tests.support import REPO, cli_env

PROXY = "TCP proxy per peer link (source address tells the link; iptables/nft are not installed here)"
"""How partitions drop packets, as the suite reports it."""

DISK_SLACK = 64 * 1024
"""Bytes left free when the nemesis fills a disk."""


class Workdir:
    """Stands in for a trial test case where L{ProcessNode} wants one."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.count = 0
        self.cleanups = []

    def mktemp(self) -> str:
        self.count += 1
        return os.path.join(self.base, f"n{self.count}")

    def addCleanup(self, f, *args):
        self.cleanups.append((f, args))


ELECTION_TIMEOUT = "500ms"
"""The nodes' election timeout, unless a test asks for another; it sizes
the nemesis's pauses and partitions."""


class FaultNode(ProcessNode):
    """
    A L{ProcessNode} on its own loopback address, dialing peers from it,
    advertising its proxy's port, optionally a mutant build.  It runs with
    C{cluster.reads_without_leader: refuse}, so every read it answers must
    be fresh: under C{serve} (the default) a node with no leader answers
    from its own state, possibly stale, by design (docs/operations.md).
    """

    def __init__(
        self,
        workdir: Workdir,
        hsm: SoftHSM,
        index: int,
        mutant: str | None = None,
        extra_args=(),
        election_timeout: str = ELECTION_TIMEOUT,
    ) -> None:
        self.ip = f"127.0.0.{index + 2}"
        super().__init__(workdir, hsm, port=_free_port_on(self.ip), extra_args=extra_args)
        self.index = index
        self.name = f"n{index}"
        self.address = f"{self.ip}:{self.port}"
        self.proxy_port = _free_port_on(self.ip)
        self.host = f"{self.ip}:{self.proxy_port}"
        self.mutant = mutant
        self.paused = False
        self.expected_down = False
        self.config = write_config(
            os.path.join(os.path.dirname(self.volume), "conf"),
            cluster=f"reads_without_leader: refuse\nelection_timeout: {election_timeout}",
        )

    def start(self):
        log = open(self.log_path, "ab")
        mutant = ["--mutant", self.mutant] if self.mutant else []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.launch",
                "--source",
                self.ip,
                *mutant,
                "--",
                "server",
                self.volume,
                "--dev",
                "--host",
                self.host,
                "--address",
                self.address,
                "--config",
                self.config,
                *self.extra_args,
            ],
            env=cli_env(MINIO_KMS_HSM_KEY=self.hsm.to_text()),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()
        self.paused = False
        return self

    def running(self) -> bool:
        """Whether the process is alive (paused counts as alive)."""
        return self.process is not None and self.process.poll() is None

    def pause(self):
        """SIGSTOP: the node keeps its sockets but answers nothing."""
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        """SIGCONT."""
        if self.running():
            os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    async def terminate(self, timeout: float = 20.0) -> None:
        """SIGTERM and wait without blocking the reactor; SIGKILL after C{timeout}."""
        if self.paused:
            self.resume()
        if not self.running():
            return
        self.process.terminate()
        for _ in range(int(timeout / 0.1)):
            if self.process.poll() is not None:
                return
            await sleep(0.1)
        self.kill()

    def stop(self):
        if self.paused:
            self.resume()
        super().stop()


def _free_port_on(ip: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class SmallDisk:
    """
    A tmpfs mounted on a node's volume directory; L{fill} shrinks it to
    what is in use, L{free} gives the room back.
    """

    SIZE = "512m"

    def __init__(self, path: str) -> None:
        self.path = path
        self.mounted = False

    def mount(self) -> str | None:
        """Mount it; return why not when this machine does not allow it."""
        os.makedirs(self.path, exist_ok=True)
        why = _why_not(["mount", "-t", "tmpfs", "-o", f"size={self.SIZE},mode=0700", "tmpfs", self.path])
        self.mounted = why is None
        return why

    def fill(self) -> None:
        """Leave only L{DISK_SLACK} bytes free on the volume."""
        stat = os.statvfs(self.path)
        used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
        self._remount(used + DISK_SLACK)

    def free(self) -> None:
        """Give the volume its room back."""
        self._remount(self.SIZE)

    def _remount(self, size) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", self.path], check=True, capture_output=True)

    def unmount(self) -> None:
        """Lazily unmount (a killed node may still hold files)."""
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True)
            self.mounted = False


class FrozenDisk:
    """
    A small ext4 file system on a loop device, mounted where a node's
    volume goes, that L{freeze} stops answering (as a hung device or a
    cloud volume out of its I/O budget would) until L{thaw}.
    """

    def __init__(self, volume: str) -> None:
        self.volume = volume
        self.image = volume + ".img"
        self.mountpoint = volume + ".disk"
        self.mounted = False

    def mount(self) -> str | None:
        """Mount it and point the volume into it; return why not when this machine does not allow it."""
        if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("mkfs.ext4", "mount", "fsfreeze")):
            return "needs root, mkfs.ext4, mount and fsfreeze"
        os.makedirs(self.mountpoint)
        with open(self.image, "wb") as f:
            f.truncate(64 << 20)
        for command in (["mkfs.ext4", "-q", "-F", self.image], ["mount", "-o", "loop", self.image, self.mountpoint]):
            why = _why_not(command)
            if why is not None:
                return why
        self.mounted = True
        inside = os.path.join(self.mountpoint, "volume")
        os.makedirs(inside, mode=0o700)
        os.symlink(inside, self.volume)
        return None

    def freeze(self) -> None:
        """Every write and fsync to the file system waits from now on."""
        subprocess.run(["fsfreeze", "--freeze", self.mountpoint], check=True, capture_output=True)

    def thaw(self) -> None:
        """The waiting writes go on."""
        subprocess.run(["fsfreeze", "--unfreeze", self.mountpoint], capture_output=True)

    def unmount(self) -> None:
        """Thaw and lazily unmount (a stopped node may still hold files)."""
        if self.mounted:
            self.thaw()
            subprocess.run(["umount", "-l", self.mountpoint], capture_output=True)
            self.mounted = False
        if os.path.exists(self.image):
            os.remove(self.image)


def _why_not(command: list[str]) -> str | None:
    """Run C{command}; None if it succeeded, else the first line of why not."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        return None
    return (result.stderr.strip() or f"{command[0]} exited {result.returncode}").splitlines()[0]


class FaultCluster:
    """
    C{size} process nodes joined as C{minkms add} does, behind link
    proxies; the nemesis acts on it through the methods below.
    """

    ENCLAVE = "faults"

    def __init__(
        self,
        base: str,
        size: int = 3,
        mutant: str | None = None,
        small_disk: bool = True,
        election_timeout: str = ELECTION_TIMEOUT,
    ) -> None:
        self.workdir = Workdir(base)
        self.hsm = SoftHSM.generate()
        self.api_key = APIKey.parse(self.hsm.sysadmin_api_key())
        self.nodes = [
            FaultNode(self.workdir, self.hsm, i, mutant, election_timeout=election_timeout) for i in range(size)
        ]
        self.proxies = {}
        self.last_ack = 0
        """When a write was last acknowledged (monotonic ns), for faults that aim right after one."""
        self.writes_in_flight = collections.Counter()
        """Writes sent to each node and not answered yet, for faults that aim while one is."""
        self.disk: SmallDisk | None = None
        self.disk_problem = "not asked for"
        if small_disk:
            disk = SmallDisk(self.nodes[-1].volume)
            why = disk.mount()
            if why is None:
                self.disk = disk
                self.disk_problem = None
            else:
                self.disk_problem = why
        self.admin = self.client(timeout=10)

    def client(self, timeout: float = 25.0) -> KMSClient:
        """A SysAdmin client that knows every node (requests pin one)."""
        return KMSClient(reactor, [n.address for n in self.nodes], self.api_key, insecure=True, timeout=timeout)

    def describe_disk(self) -> str:
        """How the full-disk fault works here, or why it cannot."""
        if self.disk is None:
            return f"full disk: not available ({self.disk_problem})"
        return f"full disk: tmpfs on {self.nodes[-1].name}'s volume, shrunk to what it uses"

    async def start(self) -> None:
        """Start every node and proxy, form the cluster, create the enclave."""
        for node in self.nodes:
            self.proxies[node.name] = _proxy_for(node)
            node.start()
        for node in self.nodes:
            await self.wait_up(node, write=True)
        for node in self.nodes[1:]:
            await self.admin.call(CLUSTER_ADDNODE, pb.AddClusterNodeRequest(Host=node.host), host=self.nodes[0].address)
        await self.admin.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=self.ENCLAVE), host=self.nodes[0].address)

    async def wait_up(self, node: FaultNode, write=False, timeout=60.0) -> None:
        """Wait until C{node} answers (and, with C{write}, knows a leader)."""
        path = "/v1/health/ready?write" if write else "/version"
        for _ in range(int(timeout / 0.2)):
            if not node.running():
                raise AssertionError(f"node {node.name} exited:\n{node.log()[-3000:]}")
            try:
                await self.admin.get(path, host=node.address)
                return
            except (KMSError, ClientError):
                await sleep(0.2)
        raise AssertionError(f"node {node.name} not up in time")

    async def leader(self) -> FaultNode | None:
        """The node that says it leads, if one answers."""
        for node in self.nodes:
            if not node.running() or node.paused:
                continue
            try:
                status = await self.admin.call(CLUSTER_STATUS, pb.ClusterStatusRequest(), host=node.address)
            except (KMSError, ClientError):
                continue
            for server in status.NodesUp.values():
                if server.Role == "Leader":
                    for candidate in self.nodes:
                        if candidate.host == server.Host:
                            return candidate
        return None

    def cut(self, a: FaultNode, b: FaultNode) -> None:
        """Drop the packets between C{a} and C{b}, both ways."""
        self.proxies[b.name].cut_from(a.ip)
        self.proxies[a.name].cut_from(b.ip)

    def heal(self) -> None:
        """Forward every link again."""
        for proxy in self.proxies.values():
            proxy.heal()

    async def stop(self) -> None:
        """Stop nodes and proxies, give the small disk back."""
        for node in self.nodes:
            node.stop()
        for proxy in self.proxies.values():
            await proxy.close()
        await self.admin.close()
        if self.disk is not None:
            self.disk.unmount()
        for f, args in reversed(self.workdir.cleanups):
            f(*args)


def _proxy_for(node: FaultNode):
    from tests.faults.proxy import LinkProxy

    return LinkProxy(reactor, (node.ip, node.proxy_port), (node.ip, node.port))


def sleep(seconds: float) -> defer.Deferred:
    """Let the reactor run for C{seconds}."""
    return task.deferLater(reactor, seconds, lambda: None)
