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
import time

from twisted.internet import defer
from twisted.trial import unittest

from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import BY_NAME
from tests.faults.cluster import FaultCluster, FrozenDisk, sleep
from tests.harness import until

STALL_SECONDS = 3.0
"""How long the leader's file system stays frozen: three election timeouts."""

ELECTION_TIMEOUT = "1s"


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
