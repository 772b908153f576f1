"""
Durability through a crash: write through the API, SIGKILL the server in
the middle of the stream, restart it on the same volume, and every write
whose reply said success is there.
"""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from minkms.apikey import APIKey
from minkms.client import ClientError, KMSClient
from minkms.errors import KMSError
from minkms.hsm import SoftHSM
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import ENCLAVE_CREATE, KEY_CREATE
from tests.harness import ProcessNode, until
from tests.test_cluster_process import ENCLAVE, list_keys


class KillNineTests(unittest.TestCase):
    timeout = 120

    async def _acknowledged_writes_survive(self):
        hsm = SoftHSM.generate()
        node = ProcessNode(self, hsm).start()
        client = KMSClient(reactor, [node.host], APIKey.parse(hsm.sysadmin_api_key()), insecure=True, timeout=5)
        self.addCleanup(client.close)
        await node.wait_up(client, write=True)
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=ENCLAVE))
        acknowledged: set[str] = set()
        failed = []

        async def writer(prefix):
            i = 0
            while not failed:
                name = f"{prefix}-{i}"
                i += 1
                try:
                    await client.call(KEY_CREATE, pb.CreateKeyRequest(Name=name), enclave=ENCLAVE)
                except (KMSError, ClientError) as e:
                    failed.append(e)
                    return
                acknowledged.add(name)

        writers = [defer.ensureDeferred(writer(f"w{i}")) for i in range(16)]
        await until(lambda: len(acknowledged) >= 50 or failed, "writes acknowledged before the kill")
        node.kill()
        await defer.gatherResults(writers)
        self.assertGreater(len(acknowledged), 20)
        node.start()
        await node.wait_up(client, write=True)
        present = await list_keys(client, node.host)
        self.assertEqual(acknowledged - present, set())
        in_doubt = present - acknowledged
        self.assertLessEqual(len(in_doubt), 16, "at most one write in flight per writer")

    def test_acknowledged_writes_survive_sigkill(self):
        return defer.ensureDeferred(self._acknowledged_writes_survive())
