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
from minkms.wire.commands import CLUSTER_STATUS
from tests.harness import free_port_run
from tests.support import REPO, cli_env


class DevClusterTests(unittest.TestCase):
    timeout = 180

    def start(self, port: int, cwd: str = REPO) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "minkms.cli.main", "cluster", "--dev", "--port", str(port)],
            env=cli_env(),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process

    async def up(self, process) -> str:
        output = ""
        deadline = time.monotonic() + 90
        while "Press Ctrl-C" not in output:
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail(f"the dev cluster did not come up:\n{output}{process.stdout.read()}")
            output += await _read_line(process)
        return output

    async def stopped_by(self, process, signum, output: str, port: int):
        """Send C{signum}; every node stops and the run's directory is gone."""
        run_dir = re.search(r"Logs\s+(\S+)", output).group(1)
        self.assertTrue(os.path.isdir(run_dir))
        process.send_signal(signum)
        for _ in range(300):
            if process.poll() is not None:
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(process.returncode, 0, process.stdout.read())
        for p in (port, port + 1, port + 2):
            self.assertFalse(_listening(p), f"node on {p} still running")
        self.assertFalse(os.path.exists(run_dir), "the run's directory was left behind")

    async def _dev_cluster(self):
        port = free_port_run(3)
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        process = self.start(port, cwd=elsewhere)
        output = await self.up(process)
        endpoints = re.search(r"Endpoint\s+(\S+)", output).group(1).split(",")
        self.assertEqual(endpoints, [f"https://127.0.0.1:{port + i}" for i in range(3)])
        api_key = re.search(r"API Key\s+(k1:\S+)", output).group(1)
        client = KMSClient(reactor, [e[len("https://") :] for e in endpoints], APIKey.parse(api_key), insecure=True)
        self.addCleanup(client.close)
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest())
        self.assertEqual(len(status.NodesUp), 3)
        self.assertEqual(sorted(s.Role for s in status.NodesUp.values()), ["Follower", "Follower", "Leader"])
        await client.close()

        stat_line = re.search(r"^  (\S+) stat -k$", output, re.M).group(1)
        other_dir = os.path.abspath(self.mktemp())
        os.makedirs(other_dir)
        env = cli_env(MINIO_KMS_SERVER=",".join(endpoints), MINIO_KMS_API_KEY=api_key)
        printed = subprocess.run(
            f"{stat_line} stat -k", shell=True, cwd=other_dir, env=env, capture_output=True, text=True, timeout=60
        )
        self.assertIn("All [3/3] nodes are up", printed.stdout, printed)

        busy = subprocess.run(
            [sys.executable, "-m", "minkms.cli.main", "cluster", "--dev", "--port", str(port)],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(busy.returncode, 1, busy)
        self.assertEqual(
            busy.stderr,
            f"minkms: error: port {port} is in use (is another minkms cluster "
            "still running?); stop it or pass --port\n",
        )
        await self.stopped_by(process, signal.SIGINT, output, port)

    def test_dev_cluster(self):
        """Up, usable from any directory, one-line refusal of a busy port, Ctrl-C stops it all."""
        return defer.ensureDeferred(self._dev_cluster())

    async def _quit(self):
        port = free_port_run(3)
        process = self.start(port)
        output = await self.up(process)
        await self.stopped_by(process, signal.SIGQUIT, output, port)

    def test_sigquit_stops_everything(self):
        """C{^\\} (SIGQUIT) leaves no orphan server behind."""
        return defer.ensureDeferred(self._quit())


async def _read_line(process) -> str:
    from twisted.internet import threads

    return await threads.deferToThread(process.stdout.readline)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
