"""
The read settings of C{config.yaml}: C{cluster.read_lease: 0} turns read
leases off (every read is confirmed with the leader first), and a node
answers reads and writes as usual.
"""

from twisted.internet import defer
from twisted.trial import unittest

from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import ENCLAVE_CREATE, KEY_CREATE, KEY_STATUS
from tests.harness import InProcessServer, write_config


class ReadLeaseOffTests(unittest.TestCase):
    timeout = 60

    async def _serve_without_leases(self):
        config = write_config(self.mktemp(), cluster="read_lease: 0")
        server = InProcessServer(self, extra_args=["--config", config])
        await server.wait_ready()
        client = server.client()
        try:
            await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e"))
            await client.call(KEY_CREATE, pb.CreateKeyRequest(Name="k"), enclave="e")
            status = await client.call(KEY_STATUS, pb.KeyStatusRequest(Name="k"), enclave="e")
        finally:
            await client.close()
        self.assertEqual(status.Name, "k")
        self.assertEqual(server.node.read_mode(), "read-index")

    def test_reads_confirmed_with_the_leader(self):
        """With leases off a read waits for a ReadIndex round, and still sees the write before it."""
        return defer.ensureDeferred(self._serve_without_leases())
