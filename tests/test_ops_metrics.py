"""
C{/v1/metrics}: scraped over real TLS from an in-process node after a
workload, the counters have moved as the workload says; no name a tenant
chose appears; only the SysAdmin may scrape unless C{metrics: public}.
"""

import os
import time

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, task
from twisted.trial import unittest

from minkms.apikey import APIKey, generate_api_key
from minkms.errors import ErrPermission, KMSError
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import BY_NAME
from tests.harness import InProcessServer, write_config

ENCLAVE = "tenant-enclave-zebra"
KEY = "tenant-key-okapi"
TEXT = b"text/plain"


def samples(text: str) -> dict:
    """{(name, sorted label pairs): value} of a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


class MetricsTests(unittest.TestCase):
    timeout = 120

    async def start(self, config_extra: str = ""):
        directory = self.mktemp()
        config = write_config(directory)
        if config_extra:
            with open(config, "a") as f:
                f.write(config_extra)
        self.server = InProcessServer(self, extra_args=["--config", config])
        await self.server.wait_ready()
        self.root = self.server.client()
        self.addCleanup(self.root.close)

    async def call(self, name, message, enclave="", client=None):
        return await (client or self.root).call(BY_NAME[name].code, message, enclave=enclave)

    async def scrape(self, client=None) -> dict:
        text = await (client or self.root).get("/v1/metrics", accept=TEXT)
        self.scraped = text.decode("utf-8")
        return samples(self.scraped)

    async def test_counters_follow_a_workload(self):
        await self.start()
        before = await self.scrape()
        await self.call("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name=ENCLAVE))
        await self.call("KEY:CREATE", pb.CreateKeyRequest(Name=KEY), ENCLAVE)
        for _ in range(3):
            await self.call("KEY:ENCRYPT", pb.EncryptRequest(Name=KEY, Plaintext=b"x"), ENCLAVE)
        with self.assertRaises(KMSError) as failed:
            await self.call("KEY:DECRYPT", pb.DecryptRequest(Name=KEY, Ciphertext=b"junk" * 10), ENCLAVE)
        user = APIKey.parse(generate_api_key())
        await self.call("IDENTITY:CREATE", pb.CreateIdentityRequest(Identity=user.identity, Privilege="User"), ENCLAVE)
        after = await self.scrape()

        def moved(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        requests = "minkms_api_requests_total"
        self.assertEqual(moved(requests, command="KEY:ENCRYPT", status="200"), 3)
        self.assertEqual(moved(requests, command="KEY:DECRYPT", status=str(failed.exception.status)), 1)
        self.assertEqual(moved(requests, command="ENCLAVE:CREATE", status="200"), 1)
        self.assertEqual(moved(requests, command="metrics", status="200"), 1)
        self.assertEqual(moved("minkms_api_request_duration_seconds_count", command="KEY:ENCRYPT"), 3)
        self.assertEqual(value(after, "minkms_api_requests_in_flight"), 1)  # this scrape
        self.assertEqual(value(after, "minkms_state_enclaves"), 1)
        self.assertEqual(value(after, "minkms_state_keys"), 1)
        self.assertEqual(value(after, "minkms_state_identities"), 1)
        self.assertEqual(value(after, "minkms_raft_role", role="Leader"), 1)
        self.assertEqual(value(after, "minkms_raft_leader_id"), value(after, "minkms_raft_node_id"))
        self.assertGreaterEqual(value(after, "minkms_raft_term"), 1)
        self.assertGreaterEqual(moved("minkms_raft_commit_index"), 3)  # three writes
        self.assertEqual(value(after, "minkms_raft_applied_index"), value(after, "minkms_raft_commit_index"))
        self.assertGreaterEqual(moved("minkms_storage_fsync_duration_seconds_count"), 3)
        self.assertGreaterEqual(moved("minkms_storage_group_commit_records_sum"), 3)
        # A commit index alone is written without an fsync at the next tick
        # after a write is answered: compare once the file stops growing.
        db = os.path.join(self.server.volume, "kms.db")
        for _ in range(20):
            size = os.path.getsize(db)
            await task.deferLater(reactor, 0.25, lambda: None)
            if os.path.getsize(db) == size:
                break
        settled = samples((await (self.root).get("/v1/metrics", accept=TEXT)).decode("utf-8"))
        self.assertEqual(value(settled, "minkms_storage_db_size_bytes"), os.path.getsize(db))
        self.assertGreaterEqual(value(after, "minkms_tls_handshakes_total"), 1)
        self.assertGreaterEqual(value(after, "minkms_connections_open"), 1)
        expiry = value(after, "minkms_tls_certificate_expiry_timestamp_seconds", kind="server", index="0")
        self.assertGreater(expiry, time.time() + 20 * 86400)  # the test certificate lasts 30 days
        for secret in (ENCLAVE, KEY, user.identity, self.server.api_key.identity):
            self.assertNotIn(secret, self.scraped)

    async def test_only_the_sysadmin_scrapes(self):
        await self.start()
        await self.call("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name=ENCLAVE))
        admin = APIKey.parse(generate_api_key())
        await self.call(
            "IDENTITY:CREATE", pb.CreateIdentityRequest(Identity=admin.identity, Privilege="Admin"), ENCLAVE
        )
        for key in (admin, None):
            client = self.server.client(key)
            self.addCleanup(client.close)
            with self.assertRaises(KMSError) as refused:
                await client.get("/v1/metrics", accept=TEXT)
            self.assertEqual(refused.exception, ErrPermission)
            self.assertEqual(refused.exception.status, 403)

    async def test_public_metrics(self):
        await self.start("metrics: public\n")
        anonymous = self.server.client(None)
        self.addCleanup(anonymous.close)
        found = await self.scrape(anonymous)
        self.assertEqual(value(found, "minkms_raft_role", role="Leader"), 1)

    async def test_handshake_failures_are_counted(self):
        await self.start()
        before = await self.scrape()
        from twisted.internet import protocol, reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        class Garbage(protocol.Protocol):
            def connectionMade(self):
                self.transport.write(b"GET / HTTP/1.0\r\n\r\n")  # plain HTTP on the TLS port

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.port)
        proto = await connectProtocol(endpoint, Garbage())
        deadline = time.monotonic() + 30
        while True:
            after = await self.scrape()
            failures = "minkms_tls_handshake_failures_total"
            if value(after, failures) > value(before, failures):
                break
            self.assertLess(time.monotonic(), deadline, "handshake failure not counted")
            from twisted.internet import task

            await task.deferLater(reactor, 0.05, lambda: None)
        proto.transport.loseConnection()


class ClusterMetricsTests(unittest.TestCase):
    timeout = 120

    async def test_follower_match_and_lag(self):
        from twisted.internet import reactor, task

        from tests.test_membership import three_node_cluster

        servers = await three_node_cluster(self)
        *nodes, client = servers
        await client.call(BY_NAME["ENCLAVE:CREATE"].code, pb.CreateEnclaveRequest(Name=ENCLAVE))
        deadline = time.monotonic() + 60
        while True:
            scrapes = {}
            for server in nodes:
                text = await client.get("/v1/metrics", host=server.host, accept=TEXT)
                scrapes[server.host] = (text.decode(), samples(text.decode()))
            leaders = [h for h, (_, s) in scrapes.items() if value(s, "minkms_raft_role", role="Leader") == 1]
            if len(leaders) == 1:
                text, leader = scrapes[leaders[0]]
                lags = {k[1]: v for k, v in leader.items() if k[0] == "minkms_raft_follower_lag_entries"}
                if len(lags) == 2 and set(lags.values()) == {0}:
                    break
            self.assertLess(time.monotonic(), deadline, f"no settled leader: {scrapes}")
            await task.deferLater(reactor, 0.1, lambda: None)
        leader_id = value(leader, "minkms_raft_node_id")
        followers = {dict(labels)["follower"] for labels in lags}
        self.assertEqual(len(followers), 2)
        self.assertNotIn(str(int(leader_id)), followers)
        for label in followers:
            self.assertEqual(
                value(leader, "minkms_raft_follower_match_index", follower=label),
                value(leader, "minkms_raft_last_index"),
            )
        for host, (text, found) in scrapes.items():
            self.assertEqual(value(found, "minkms_raft_leader_id"), leader_id)
            self.assertEqual(value(found, "minkms_state_enclaves"), 1)
            self.assertNotIn(ENCLAVE, text)
            if host != leaders[0]:
                self.assertEqual(value(found, "minkms_raft_role", role="Follower"), 1)
                self.assertNotIn("minkms_raft_follower_lag_entries{", text)


class RaftWatcherTests(unittest.TestCase):
    """Elections, leader changes and snapshots are counted from what changes between reads."""

    def test_counts_changes(self):
        import attrs

        from minkms.server.metrics import NodeFigures, RaftWatcher

        base = NodeFigures(
            node_id=1,
            role="Follower",
            term=1,
            leader=0,
            commit=5,
            applied=5,
            last_index=5,
            snapshot_index=0,
            match={},
            db_size=0,
            enclaves=0,
            keys=0,
            identities=0,
            policies=0,
        )
        reads = iter(
            [
                base,
                attrs.evolve(base, term=3, leader=-1),  # two elections, no leader yet
                attrs.evolve(base, term=3, leader=2, snapshot_index=4),
                attrs.evolve(base, term=3, leader=2, snapshot_index=4),
            ]
        )
        watcher = RaftWatcher(lambda: next(reads))
        for _ in range(4):
            watcher.sample()
        self.assertEqual((watcher.elections, watcher.leader_changes, watcher.snapshots), (2, 1, 1))
