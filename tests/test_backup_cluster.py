"""
C{minkms backup} / C{minkms restore} on a cluster: the restore goes
through the log, so every member ends with the backed-up state, even when
the state is far larger than one batch of log entries.
"""

from twisted.internet import defer
from twisted.trial import unittest

from minkms.hsm import SoftHSM
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import ENCLAVE_CREATE, ENCLAVE_DELETE, KEY_CREATE
from tests.harness import in_process_cluster

KEYS = 300
BATCH = 25
"""Writes in flight at once: each opens a connection, and 300 TLS handshakes
at once, client and servers in one loaded process, outlast the handshake
deadline (limits.handshake_timeout)."""


class ClusterRestoreTests(unittest.TestCase):
    timeout = 120

    async def _restore(self):
        (first, second), client = await in_process_cluster(self, 2)
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="e"))
        for start in range(0, KEYS, BATCH):
            await defer.gatherResults(
                [
                    defer.ensureDeferred(client.call(KEY_CREATE, pb.CreateKeyRequest(Name=f"key-{i:04d}"), enclave="e"))
                    for i in range(start, start + BATCH)
                ]
            )
        backup = await client.get("/v1/db", host=first.host)
        self.assertGreater(len(first.node.state.snapshot()), 60_000, "the state must exceed one batch")
        await client.call(ENCLAVE_DELETE, pb.DeleteEnclaveRequest(Name="e"))
        status, _, body = await client.request(b"PUT", "/v1/db", backup, host=second.host)
        self.assertEqual(status, 200, body)
        self.assertEqual(len(second.node.state.state.enclaves["e"].keys), KEYS)
        for _ in range(100):
            if first.node.state.digest() == second.node.state.digest():
                break
            await defer.Deferred.fromCoroutine(_pause())
        self.assertEqual(first.node.state.digest(), second.node.state.digest())
        self.assertEqual(len(first.node.state.state.enclaves["e"].keys), KEYS)

        other = SoftHSM.generate()
        status, _, body = await client.request(b"PUT", "/v1/db", other.seal(b"junk"), host=first.host)
        self.assertEqual(status, 400, body)

    def test_restore_replicates_large_state(self):
        return defer.ensureDeferred(self._restore())


async def _pause():
    from twisted.internet import reactor, task

    await task.deferLater(reactor, 0.05, lambda: None)
