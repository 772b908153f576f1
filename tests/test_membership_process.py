"""
The membership lifecycle an operator meets in the first week, with real
C{minkms server} processes on loopback and the C{minkms} CLI run as a user
types it: the guide's reset procedure, a wiped member shown as not part of
the cluster, a node removed while it was down, a node that holds data, an
unreachable host, and a first start that failed.
"""

import os
import re
import socket
import subprocess
import sys
import time

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from minkms.apikey import APIKey
from minkms.client import KMSClient
from minkms.errors import KMSError
from minkms.hsm import SoftHSM
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import ENCLAVE_CREATE, KEY_LIST
from tests.harness import ProcessNode, free_port
from tests.support import REPO, cli_env
from tests.test_cli_commands import CLIAssertions, inline, run_minkms
from tests.test_cluster_process import ENCLAVE, form_cluster


async def eventually(check, timeout=60.0, interval=0.2):
    """Call C{await check()} until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await task.deferLater(reactor, interval, lambda: None)


async def exited(process, timeout=60.0):
    """Wait for a process to exit; its exit status (None if it did not)."""
    await eventually(lambda: defer.succeed(process.poll() is not None), timeout, 0.1)
    return process.poll()


def sysadmin(node: ProcessNode) -> dict:
    """The CLI settings of the SysAdmin talking to C{node}."""
    return {"MINIO_KMS_SERVER": f"https://{node.host}", "MINIO_KMS_API_KEY": node.hsm.sysadmin_api_key()}


def node_blocks(stat_output: str) -> dict:
    """C{minkms stat}'s text as node ID -> {label: value}."""
    blocks = {}
    for block in stat_output.split("\n\n"):
        head = re.match(r"\S+ Node (\d+) at ", block)
        if head:
            rows = dict(re.findall(r"^\s+(\w+)\s+(.*)$", block, re.M))
            blocks[int(head.group(1))] = rows
    return blocks


class MembershipTestCase(CLIAssertions, unittest.TestCase):
    timeout = 240

    async def cli(self, *args, node: ProcessNode, **env) -> object:
        return await run_minkms(*args, "-k", **{**sysadmin(node), **env})

    async def ok(self, *args, node: ProcessNode, **env):
        result = await self.cli(*args, node=node, **env)
        self.assertEqual((result.code, result.err), (0, ""), result)
        return result


class GuideResetTests(MembershipTestCase):
    """
    The guide's fix for "server not part of cluster" and for a wrong HSM
    key: stop the node, delete its kms.db, start it, then 'minkms add' it
    from a member.  Between the wipe and the re-add, the wiped node is not
    part of the cluster (stat counts it as down) and refuses reads.
    """

    @inline
    async def test_reset_procedure(self):
        nodes, client = await form_cluster(self)
        await self.ok("add-enclave", ENCLAVE, node=nodes[0])
        await self.ok("add-key", "-e", ENCLAVE, "before-reset", node=nodes[1])
        wiped = nodes[2]

        wiped.stop()
        os.remove(os.path.join(wiped.volume, "kms.db"))
        wiped.start()
        await wiped.wait_up(client)

        async def refused():
            try:
                await client.call(KEY_LIST, pb.ListRequest(), enclave=ENCLAVE, host=wiped.host)
            except KMSError as e:
                return e if e.status == 503 else None
            return None

        error = await eventually(refused)
        self.assertIsNotNone(error, "the wiped node kept serving its empty state")
        self.assertIn("server not part of cluster: this node's kms.db was reset", error.message)

        async def shown_as_not_member():
            result = await self.cli("stat", node=nodes[0])
            return result if "Not part of the cluster" in result.out else None

        stat = await eventually(shown_as_not_member)
        self.assertIsNotNone(stat, "stat did not show the wiped node as not part of the cluster")
        self.assertEqual(node_blocks(stat.out)[2]["State"], "Not part of the cluster")
        self.assertIn("[2/3] nodes are up", stat.out)
        self.assertNotIn("All [3/3]", stat.out)

        added = await self.ok("add", wiped.host, node=nodes[1])
        self.assertEqual(added.out, f"Added node {wiped.host} to the cluster\n")

        async def healthy():
            result = await self.cli("stat", node=nodes[0])
            commits = {b.get("Commit") for b in node_blocks(result.out).values()}
            return result if "All [3/3] nodes are up" in result.out and len(commits) == 1 else None

        stat = await eventually(healthy)
        self.assertIsNotNone(stat, "the cluster did not become healthy with equal commits")
        self.assertEqual(sorted(b["State"] for b in node_blocks(stat.out).values()), ["Follower", "Follower", "Leader"])
        self.assertEqual(sorted(node_blocks(stat.out)), [0, 1, 3], "the reset node got a new ID")
        listed = await self.ok("ls-key", "-e", ENCLAVE, node=wiped)
        self.assertIn("before-reset", listed.out)


class RemovedWhileDownTests(MembershipTestCase):
    """
    A member removed while it was down learns it when it comes back, and
    refuses to serve: it stops with "server not part of cluster".
    """

    @inline
    async def test_removed_node_stops(self):
        nodes, client = await form_cluster(self)
        await self.ok("add-enclave", ENCLAVE, node=nodes[0])
        removed = nodes[2]
        removed.stop()
        result = await self.ok("rm", removed.host, node=nodes[0])
        self.assertEqual(result.out, f"Removed node {removed.host} from the cluster\n")
        await self.ok("add-key", "-e", ENCLAVE, "after-removal", node=nodes[1])

        removed.start()
        status = await exited(removed.process)
        self.assertEqual(status, 1, f"the removed node kept running:\n{removed.log()}")
        self.assertIn("minkms: error: server not part of cluster", removed.log())
        self.assertNotIn("Traceback", removed.log())
        stat = await self.ok("stat", node=nodes[0])
        self.assertIn("All [2/2] nodes are up", stat.out)


class AddNodeTests(MembershipTestCase):
    """What 'minkms add' refuses, in words, and at once."""

    @inline
    async def test_node_holding_data(self):
        hsm = SoftHSM.generate()
        member = ProcessNode(self, hsm).start()
        other = ProcessNode(self, hsm).start()
        client = KMSClient(reactor, [member.host], APIKey.parse(hsm.sysadmin_api_key()), insecure=True)
        self.addCleanup(client.close)
        for node in (member, other):
            await node.wait_up(client, write=True)
        await self.ok("add-enclave", "kept", node=member)
        for name in ("held-1", "held-2", "held-3"):
            await self.ok("add-enclave", name, node=other)
        await self.ok("add-key", "-e", "held-1", "k1", node=other)
        await self.ok("add-key", "-e", "held-2", "k2", node=other)

        refused = await self.cli("add", other.host, node=member)
        self.assertFails(
            refused, f"cannot add {other.host}: node holds 3 enclaves, 2 keys: remove its kms.db first, or pass --force"
        )
        listed = await self.ok("ls-enclave", node=other)
        self.assertIn("held-1", listed.out, "a refused add must not touch the node")

        await self.ok("add", "--force", other.host, node=member)

        async def replicated():
            result = await self.cli("ls-enclave", node=other)
            return result if "kept" in result.out else None

        listed = await eventually(replicated)
        self.assertIsNotNone(listed, "the forced node did not receive the cluster's state")
        self.assertNotIn("held-1", listed.out)

    @inline
    async def test_refusals_in_words(self):
        """An unreachable host, an unknown name, a node started with another --host."""
        hsm = SoftHSM.generate()
        member = ProcessNode(self, hsm).start()
        elsewhere = ProcessNode(self, hsm)
        elsewhere.host = f"localhost:{elsewhere.port}"
        elsewhere.start()
        client = KMSClient(reactor, [member.host], APIKey.parse(hsm.sysadmin_api_key()), insecure=True)
        self.addCleanup(client.close)
        await member.wait_up(client, write=True)
        await elsewhere.wait_up(client)
        wrong = await self.cli("add", f"127.0.0.1:{elsewhere.port}", node=member)
        self.assertFails(
            wrong,
            f"server not part of cluster: the node was started with --host "
            f"localhost:{elsewhere.port}, but was added as 127.0.0.1:{elsewhere.port}",
        )
        port = free_port()
        refused = await self.cli("add", f"127.0.0.1:{port}", node=member)
        self.assertFails(refused, f"cannot reach 127.0.0.1:{port}: connection refused")
        unknown = await self.cli("add", "no-such-node.invalid:7373", node=member)
        self.assertFails(unknown, "cannot reach no-such-node.invalid:7373: no such host")


class FirstStartTests(unittest.TestCase):
    """A first start that fails leaves nothing half-made behind."""

    timeout = 120

    @inline
    async def test_failed_first_start_then_leads(self):
        hsm = SoftHSM.generate()
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        node = ProcessNode(self, hsm, port=port).start()
        status = await exited(node.process)
        busy.close()
        self.assertEqual(status, 1)
        self.assertIn(f"cannot listen on 127.0.0.1:{port}", node.log())

        node.start()
        client = KMSClient(reactor, [node.host], APIKey.parse(hsm.sysadmin_api_key()), insecure=True)
        self.addCleanup(client.close)
        await node.wait_up(client, write=True)
        self.assertRegex(node.log(), rf"Node 0: 127\.0\.0\.1:{port} <-")
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name="after-failed-start"))

    def test_dev_start_failure_removes_its_volume(self):
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        self.addCleanup(busy.close)
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "minkms.cli.main", "server", "--dev", "--address", address],
            env=cli_env(TMPDIR=tmp),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(f"minkms: error: cannot listen on {address}", result.stderr)
        self.assertEqual(os.listdir(tmp), [])
