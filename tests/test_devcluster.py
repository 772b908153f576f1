"""
README's first command: C{minkms cluster --dev} starts and joins a local
3-node cluster, prints the endpoint and API key, and stops every node when
it is told to stop.
"""

import os
import re
import signal
import subprocess
import sys
import time

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from minkms.apikey import APIKey
from minkms.client import KMSClient
from minkms.wire import kms_pb2 as pb
from tests.harness import free_port
from tests.support import REPO, cli_env


class DevClusterTests(unittest.TestCase):
    timeout = 120

    async def _dev_cluster(self):
        port = free_port()
        logs = os.path.abspath(self.mktemp())
        process = subprocess.Popen(
            [sys.executable, "-m", "minkms.cli.main", "cluster", "--dev", "--port", str(port), "--logs", logs],
            env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        output = ""
        deadline = time.monotonic() + 60
        while "Press Ctrl-C" not in output:
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail(f"the dev cluster did not come up:\n{output}{process.stdout.read()}")
            output += await _read_line(process)
        endpoints = re.search(r"Endpoint\s+(\S+)", output).group(1).split(",")
        self.assertEqual(endpoints, [f"https://127.0.0.1:{port + i}" for i in range(3)])
        api_key = re.search(r"API Key\s+(k1:\S+)", output).group(1)
        client = KMSClient(reactor, [e[len("https://"):] for e in endpoints], APIKey.parse(api_key), insecure=True)
        self.addCleanup(client.close)
        status = await client.call(3, pb.ClusterStatusRequest())
        self.assertEqual(len(status.NodesUp), 3)
        self.assertEqual(sorted(s.Role for s in status.NodesUp.values()), ["Follower", "Follower", "Leader"])
        await client.close()
        process.send_signal(signal.SIGTERM)
        for _ in range(200):
            if process.poll() is not None:
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(process.returncode, 0)
        for endpoint in endpoints:
            host, _, p = endpoint[len("https://"):].partition(":")
            self.assertFalse(_listening(int(p)), f"node on {p} still running")

    def test_dev_cluster(self):
        return defer.ensureDeferred(self._dev_cluster())


async def _read_line(process) -> str:
    from twisted.internet import threads

    return await threads.deferToThread(process.stdout.readline)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
