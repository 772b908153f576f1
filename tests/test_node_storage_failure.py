"""
A node whose disk fails stops acknowledging writes and says why: the
write in flight fails with 503 and the storage error, nothing unsynced is
reported as done, and the node asks its service to stop the process.
"""

from twisted.internet import defer
from twisted.trial import unittest

from minkms.errors import KMSError
from minkms.storage.faults import FaultyFiles, enospc
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import ENCLAVE_CREATE, KEY_CREATE
from tests.harness import InProcessServer


class DiskFullTests(unittest.TestCase):
    async def _disk_full(self):
        server = InProcessServer(self)
        await server.wait_ready()
        client = server.client()
        self.addCleanup(client.close)
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e"))
        stopped = []
        server.node.fatal_hook = stopped.append

        def failing(files):
            faulty = FaultyFiles(files)
            faulty.fail("pwrite", enospc())
            return faulty

        server.node.volume.instrument(failing, lambda records: None)
        with self.assertRaises(KMSError) as e:
            await client.call(KEY_CREATE, pb.CreateKeyRequest(Name="k"), enclave="e")
        self.assertEqual(e.exception.status, 503)
        self.assertIn("storage failed", e.exception.message)
        self.assertIn("No space left on device", e.exception.message)
        self.assertEqual(len(stopped), 1)
        self.assertIn("storage failed", stopped[0])
        self.assertFalse(server.node.ready(False))
        with self.assertRaises(KMSError) as again:
            await client.call(KEY_CREATE, pb.CreateKeyRequest(Name="k2"), enclave="e")
        self.assertEqual(again.exception.status, 503)
        self.assertIn("storage failed", again.exception.message)
        self.assertEqual(server.node.state.state.enclaves["e"].keys, {}, "nothing unsynced was applied")

    def test_disk_full_stops_acknowledging(self):
        return defer.ensureDeferred(self._disk_full())
