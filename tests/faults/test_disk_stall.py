"""
The leader's disk stops answering for longer than the election timeout
(a frozen file system, as a hung device or a cloud volume out of its I/O
budget would), on real processes.  The leader must keep its leadership:
its event loop never waits for its own disk, so its heartbeats keep
going, the followers keep their read leases and answer reads throughout,
and the write caught by the stall is answered once the disk is back.
Writing the leader's appends on its event loop (as the followers may)
failed this in four runs of six: the loop stopped for the whole stall,
the followers elected another leader, and their reads waited for it.

It needs root (a loop-mounted ext4 and C{fsfreeze}); elsewhere it is
skipped.
"""

import os
import shutil
import subprocess
import time

from twisted.internet import defer
from twisted.trial import unittest

from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import BY_NAME
from tests.faults.cluster import FaultCluster, sleep
from tests.harness import until

STALL_SECONDS = 3.0
"""How long the leader's file system stays frozen: three election timeouts."""

ELECTION_TIMEOUT = "1s"


class FrozenDisk:
    """A small ext4 file system on a loop device, mounted where a node's volume goes, that can be frozen."""

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
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                return (result.stderr.strip() or f"{command[0]} exited {result.returncode}").splitlines()[0]
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


class DiskStallTests(unittest.TestCase):
    timeout = 180

    async def test_leader_keeps_leading_through_a_disk_stall(self):
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        cluster = FaultCluster(base, 3, small_disk=False, election_timeout=ELECTION_TIMEOUT)
        founder, *followers = cluster.nodes
        disk = FrozenDisk(founder.volume)
        self.addCleanup(disk.unmount)
        self.addCleanup(cluster.stop)
        why = disk.mount()
        if why is not None:
            raise unittest.SkipTest(f"no file system to freeze here: {why}")
        await cluster.start()
        self.assertIs(await until(cluster.leader, "a leader"), founder, "the founding node leads")
        client = cluster.client(timeout=30)
        self.addCleanup(client.close)
        enclave, create, generate = cluster.ENCLAVE, BY_NAME["KEY:CREATE"].code, BY_NAME["KEY:GENERATE"].code
        await client.call(create, pb.CreateKeyRequest(Name="k"), enclave=enclave, host=founder.address)

        reads: list[tuple[float, float]] = []
        running = True

        async def read_loop(node):
            while running:
                started = time.monotonic()
                await client.call(
                    generate, pb.GenerateKeyRequest(Name="k", Length=32), enclave=enclave, host=node.address
                )
                reads.append((started, time.monotonic()))

        loops = [read_loop(node) for node in followers for _ in range(2)]
        readers = defer.gatherResults([defer.ensureDeferred(loop) for loop in loops], consumeErrors=True)
        await sleep(1.0)
        logged = {node.name: len(node.log()) for node in cluster.nodes}
        disk.freeze()
        frozen_at = time.monotonic()
        stalled = defer.ensureDeferred(
            client.call(create, pb.CreateKeyRequest(Name="during"), enclave=enclave, host=founder.address)
        )
        await sleep(STALL_SECONDS)
        disk.thaw()
        thawed_at = time.monotonic()
        await stalled
        await sleep(1.0)
        running = False
        await readers

        self.assertIs(await cluster.leader(), founder, "the leader kept its leadership")
        since = {node.name: node.log()[logged[node.name] :] for node in cluster.nodes}
        changes = {name: text for name, text in since.items() if "leader (term" in text or "lost the leader" in text}
        self.assertEqual(changes, {}, "no election")
        during = [end - start for start, end in reads if start < thawed_at and end > frozen_at]
        self.assertGreater(len(during), 10, "the followers answered reads while the leader's disk was frozen")
        self.assertLess(max(during), 1.0, "no follower read waited for the stall or an election")
