"""
Removing nodes (C{minkms rm}, CLUSTER:REMOVENODE): the cluster shrinks
through the log; with DeleteClusterOnHost the removed node starts over as
a fresh single-node cluster that can be added again.
"""

from twisted.internet import defer
from twisted.trial import unittest

from minkms.errors import KMSError
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import (
    CLUSTER_ADDNODE,
    CLUSTER_EDIT,
    CLUSTER_REMOVENODE,
    CLUSTER_STATUS,
    ENCLAVE_CREATE,
)
from tests.harness import InProcessServer, in_process_cluster, until


async def three_node_cluster(testcase):
    """Three in-process nodes joined with CLUSTER:ADDNODE, and a SysAdmin client of the first."""
    (a, b, c), client = await in_process_cluster(testcase, 3)
    return a, b, c, client


class RemoveNodeTests(unittest.TestCase):
    timeout = 60

    async def _remove(self):
        a, b, c, client = await three_node_cluster(self)
        old_cluster = a.node.cluster_id

        await client.call(CLUSTER_REMOVENODE, pb.RemoveClusterNodeRequest(Host=c.host, DeleteClusterOnHost=True))
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest())
        self.assertEqual(sorted(s.Host for s in status.NodesUp.values()), sorted([a.host, b.host]))
        self.assertEqual(dict(status.NodesDown), {})
        await until(lambda: c.node.ready(True), "the removed node to start over")
        self.assertNotEqual(c.node.cluster_id, old_cluster)
        self.assertEqual(c.node.members(), {0: c.host})
        self.assertEqual(c.node.state.state.enclaves, {})

        await client.call(CLUSTER_ADDNODE, pb.AddClusterNodeRequest(Host=c.host))
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest())
        self.assertEqual(len(status.NodesUp), 3)
        self.assertEqual(c.node.cluster_id, old_cluster)

        await client.call(CLUSTER_REMOVENODE, pb.RemoveClusterNodeRequest(Host=b.host))
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest())
        self.assertEqual(sorted(s.Host for s in status.NodesUp.values()), sorted([a.host, c.host]))
        with self.assertRaises(KMSError) as e:
            await client.call(CLUSTER_REMOVENODE, pb.RemoveClusterNodeRequest(Host=b.host))
        self.assertEqual(e.exception.status, 404)
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="after-removal"))

    def test_remove_nodes(self):
        return defer.ensureDeferred(self._remove())


class EditClusterTests(unittest.TestCase):
    """
    C{minkms edit HOST --rm ID} when a quorum is lost for good: the
    surviving node drops the dead members from its own membership without
    consensus, becomes a single-node cluster and accepts writes again, with
    every acknowledged write kept.
    """

    timeout = 60

    async def _edit(self):
        a, b, c, client = await three_node_cluster(self)
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="kept"))
        ids = {address: node_id for node_id, address in a.node.members().items()}
        await b.stop()
        await c.stop()
        await until(lambda: not a.node.ready(True), "the survivor to lose its quorum")
        with self.assertRaises(KMSError) as e:
            await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="lost"))
        self.assertEqual(e.exception.status, 503)

        with self.assertRaises(KMSError) as e:
            await client.call(CLUSTER_EDIT, pb.EditClusterRequest(Host=a.host, RemoveIDs=[ids[a.host]]))
        self.assertEqual(e.exception.status, 400)
        with self.assertRaises(KMSError) as e:
            await client.call(CLUSTER_EDIT, pb.EditClusterRequest(Host=b.host, RemoveIDs=[ids[b.host]]))
        self.assertEqual(e.exception.status, 400)

        await client.call(CLUSTER_EDIT, pb.EditClusterRequest(Host=a.host, RemoveIDs=[ids[b.host], ids[c.host]]))
        self.assertEqual(a.node.members(), {ids[a.host]: a.host})
        await a.wait_ready()
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="after-edit"))
        self.assertEqual(sorted(a.node.state.state.enclaves), ["after-edit", "kept"])
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest())
        self.assertEqual(len(status.NodesUp), 1)
        await client.close()
        await a.stop()
        again = InProcessServer(self, hsm=a.hsm, volume=a.volume, port=a.port)
        await again.wait_ready()
        self.assertEqual(again.node.members(), {ids[a.host]: a.host})
        self.assertEqual(sorted(again.node.state.state.enclaves), ["after-edit", "kept"])

    def test_edit_after_quorum_loss(self):
        return defer.ensureDeferred(self._edit())
