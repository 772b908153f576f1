"""
A three-node cluster of real processes on loopback: formed with
CLUSTER:ADDNODE as C{minkms add} does, then the leader is killed with
SIGKILL while writes are in flight.  Every write whose reply said success
must be on the survivors, and the restarted node must catch up.
"""

import random
import re

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from minkms.client import ClientError, KMSClient
from minkms.errors import KMSError
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import CLUSTER_ADDNODE, CLUSTER_STATUS, ENCLAVE_CREATE, KEY_CREATE, KEY_LIST
from tests.harness import ProcessNode, form_cluster, leader_of, until, write_config

ENCLAVE = "e"


async def list_keys(client: KMSClient, host: str) -> set[str]:
    """Every key name in the enclave, as one node sees it (all pages)."""
    names, cont = set(), ""
    while True:
        page = await client.call(KEY_LIST, pb.ListRequest(ContinueAt=cont, Limit=500), enclave=ENCLAVE, host=host)
        names.update(k.Name for k in page.Keys)
        if not page.ContinueAt or not page.Keys:
            return names
        cont = page.ContinueAt


async def caught_up(client: KMSClient, host: str, names: set[str], timeout: float = 60.0) -> set[str]:
    """The keys the node at C{host} has once it has all of C{names}, or after C{timeout} what it has then."""
    seen: list[set[str]] = [set()]

    async def has_all():
        try:
            seen[0] = await list_keys(client, host)
        except KMSError as e:
            if e.status != 404:
                raise
            return False  # still catching up: the enclave may not have reached it yet
        return names <= seen[0]

    try:
        await until(has_all, f"{host} to catch up", timeout=timeout, interval=0.2)
    except AssertionError:
        pass
    return seen[0]


class ClusterFailoverTests(unittest.TestCase):
    timeout = 180

    async def writer(self, client, nodes, name_prefix, stop, acknowledged, rng):
        i = 0
        while not stop:
            node = rng.choice(nodes)
            name = f"{name_prefix}-{i}"
            i += 1
            try:
                await client.call(KEY_CREATE, pb.CreateKeyRequest(Name=name), enclave=ENCLAVE, host=node.host)
            except (KMSError, ClientError):
                await task.deferLater(reactor, 0.05, lambda: None)
                continue
            acknowledged.add(name)

    async def _kill_leader_during_writes(self):
        nodes, client = await form_cluster(self)
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest(), host=nodes[1].host)
        self.assertEqual(len(status.NodesUp), 3, status)
        self.assertEqual(len(status.NodesDown), 0)
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=ENCLAVE))
        acknowledged: set[str] = set()
        stop: list = []
        rng = random.Random(7)
        writers = [defer.ensureDeferred(self.writer(client, nodes, f"w{i}", stop, acknowledged, rng)) for i in range(8)]
        await until(lambda: len(acknowledged) >= 50, "writes acknowledged before the kill")
        leader = await leader_of(client, nodes)
        self.assertIsNotNone(leader)
        before_kill = len(acknowledged)
        leader.kill()
        # More writes than can have been in flight at the kill: the survivors took some.
        await until(lambda: len(acknowledged) > before_kill + len(writers), "writes acknowledged after the kill")
        stop.append(True)
        await defer.gatherResults(writers)
        survivors = [n for n in nodes if n is not leader]
        successor = await until(lambda: leader_of(client, survivors), "a new leader")
        other = next(n for n in survivors if n is not successor)
        self.assertRegex(successor.log(), r"this node is the leader \(term \d+\)")
        shown = rf"node \d+ at {re.escape(successor.host)} is the leader \(term \d+\)"
        await until(lambda: re.search(shown, other.log()), f"{other.host} logging its new leader")
        self.assertRegex(other.log(), r"lost the leader \(node \d+\); waiting for an election")
        print(f"acknowledged {before_kill} before the kill, {len(acknowledged)} in all")
        self.assertGreater(before_kill, 0)
        self.assertGreater(len(acknowledged), before_kill, "the survivors kept accepting writes")
        for node in survivors:
            present = await list_keys(client, node.host)
            self.assertEqual(acknowledged - present, set(), f"acknowledged writes missing on {node.host}")
        leader.start()
        await leader.wait_up(client)
        present = await caught_up(client, leader.host, acknowledged)
        self.assertEqual(acknowledged - present, set(), "the restarted node did not catch up")
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest(), host=leader.host)
        self.assertEqual(len(status.NodesUp), 3)

    def test_kill_leader_during_writes(self):
        return defer.ensureDeferred(self._kill_leader_during_writes())


class SnapshotCatchUpTests(unittest.TestCase):
    """
    With frequent log compaction, a member that was down while the log
    moved on, and a node added afterwards, both catch up through
    InstallSnapshot (the entries they miss are no longer in the log).
    """

    timeout = 180

    async def _catch_up(self):
        config = write_config(self.mktemp(), "snapshot_entries: 10")
        nodes, client = await form_cluster(self, extra_args=["--config", config])
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=ENCLAVE))
        nodes[2].stop()
        names = {f"k{i}" for i in range(60)}
        for name in sorted(names):
            await client.call(KEY_CREATE, pb.CreateKeyRequest(Name=name), enclave=ENCLAVE, host=nodes[0].host)
        nodes[2].start()
        newcomer = ProcessNode(self, nodes[0].hsm, extra_args=["--config", config]).start()
        await newcomer.wait_up(client, write=True)
        await client.call(CLUSTER_ADDNODE, pb.AddClusterNodeRequest(Host=newcomer.host), host=nodes[0].host)
        for node in (nodes[2], newcomer):
            await node.wait_up(client)
            present = await caught_up(client, node.host, names)
            self.assertEqual(names - present, set(), f"{node.host} did not catch up")
            self.assertIn("installed a snapshot from the leader", node.log())
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest(), host=newcomer.host)
        self.assertEqual(len(status.NodesUp), 4, status)

    def test_catch_up_by_snapshot(self):
        return defer.ensureDeferred(self._catch_up())


class WrongHostTests(unittest.TestCase):
    """
    The guide's troubleshooting case: a member restarted with a --host other
    than the one it was added as refuses to start with "server not part of
    cluster"; started with the right one, it serves again.
    """

    timeout = 120

    async def _wrong_host(self):
        nodes, client = await form_cluster(self, size=2)
        member = nodes[1]
        member.stop()
        right_host = member.host
        member.host = f"localhost:{member.port}"
        member.start()
        await until(lambda: member.process.poll() is not None, "the member refusing to start")
        self.assertEqual(member.process.returncode, 1)
        self.assertIn("minkms: error: server not part of cluster", member.log())
        self.assertNotIn("Traceback", member.log())
        member.host = right_host
        member.start()
        await member.wait_up(client, write=True)
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest(), host=member.host)
        self.assertEqual(len(status.NodesUp), 2)

    def test_wrong_host_refused(self):
        return defer.ensureDeferred(self._wrong_host())
