"""
The server as an operator runs it: real processes, real files, real TLS.

Covers the banner, restarts on the same volume, the wrong-HSM-key message,
C{twistd -n minkms}, and one test per kind of bad start-up input (each is
one clear line on stderr and a non-zero exit).
"""

import json
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request

from twisted.trial import unittest

from minkms.hsm import SoftHSM
from tests.harness import free_port
from tests.support import REPO, cli_env, stop_process, write_server_certificate

STARTUP_TIMEOUT = 30


class RunningServer:
    """A C{minkms server} (or twistd) process, stopped at test cleanup."""

    def __init__(self, testcase, args, env, argv0=None):
        command = argv0 or [sys.executable, "-m", "minkms.cli.main", "server"]
        self.process = subprocess.Popen(
            command + list(args),
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        testcase.addCleanup(self.stop)
        self.output = ""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "Server is up and running" not in self.output:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"server exited before its banner:\n{self.output}")
            self.output += line
            if time.monotonic() > deadline:
                raise AssertionError(f"no banner in time:\n{self.output}")

    def stop(self):
        stop_process(self.process)
        self.process.stdout.close()


def get_version(port: int) -> dict:
    """C{curl -k https://127.0.0.1:PORT/version}, as the guide does."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/version", context=context, timeout=10) as r:
        return json.loads(r.read())


def run_server_expecting_failure(args, env, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minkms.cli.main", "server", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ServerTestBase(unittest.TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.volume = os.path.join(self.dir, "volume")
        self.hsm = SoftHSM.generate()
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        certs = os.path.join(self.dir, "certs")
        os.makedirs(os.path.join(certs, "CAs"))
        self.key, self.cert = write_server_certificate(certs)
        self.config = os.path.join(self.dir, "config.yaml")
        with open(self.config, "w") as f:
            f.write(
                f"version: v1\ntls:\n  certs:\n  - key: {self.key}\n    cert: {self.cert}\n"
                f"  ca: {os.path.join(certs, 'CAs')}\n"
            )

    def env(self, hsm=None, **extra):
        return cli_env(MINIO_KMS_HSM_KEY=(hsm or self.hsm).to_text(), **extra)

    def args(self, *extra):
        return [self.volume, "--host", self.host, "--address", self.host, "--config", self.config, *extra]

    def assertOneLineFailure(self, result, fragment):
        self.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(fragment, lines[0])
        self.assertNotIn("Traceback", result.stderr + result.stdout)


class BannerTests(ServerTestBase):
    def test_banner_and_restart(self):
        """
        The banner shows the guide's fields; a restart on the same volume
        keeps the cluster ID; the API key is derived from the HSM key.
        """
        server = RunningServer(self, self.args(), self.env())
        out = server.output
        uuid_re = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        self.assertRegex(out, r"Version\s+\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ")
        self.assertRegex(out, r"HSM\s+hsm:minio:soft")
        cluster_id = re.search(r"Cluster ID\s+(" + uuid_re + ")", out).group(1)
        self.assertRegex(out, rf"Node 0: {re.escape(self.host)} <-")
        self.assertRegex(out, rf"Endpoint\s+https://{re.escape(self.host)}")
        self.assertIn(f"API Key     {self.hsm.sysadmin_api_key()}", out)
        self.assertTrue(out.rstrip().endswith("=> Server is up and running..."))
        version = get_version(self.port)
        self.assertEqual(version["host"], self.host)
        self.assertEqual(set(version), {"version", "commit", "api_version", "host", "fips140"})
        for name in os.listdir(self.volume):
            mode = stat.S_IMODE(os.stat(os.path.join(self.volume, name)).st_mode)
            self.assertEqual(mode, 0o600, name)
        server.stop()
        again = RunningServer(self, self.args(), self.env())
        self.assertIn(cluster_id, again.output)

    def test_wrong_hsm_key(self):
        """A volume sealed by another HSM key: the guide's exact message."""
        RunningServer(self, self.args(), self.env()).stop()
        result = run_server_expecting_failure(self.args(), self.env(SoftHSM.generate()))
        self.assertOneLineFailure(result, "failed to unseal root encryption key with HSM: invalid ciphertext")
        self.assertEqual(
            result.stderr.strip(), "minkms: error: failed to unseal root encryption key with HSM: invalid ciphertext"
        )

    def test_docs_spelling_of_hsm_variable(self):
        """MINIO_HSM_KMS_KEY (the settings page's spelling) works too."""
        env = cli_env(MINIO_HSM_KMS_KEY=self.hsm.to_text())
        server = RunningServer(self, self.args(), env)
        self.assertIn(self.hsm.sysadmin_api_key(), server.output)

    def test_twistd(self):
        """twistd -n minkms takes the same options and prints the same banner."""
        argv0 = [os.path.join(os.path.dirname(sys.executable), "twistd"), "--nodaemon", "--pidfile=", "minkms"]
        server = RunningServer(self, self.args(), self.env(), argv0=argv0)
        self.assertIn(f"Node 0: {self.host} <-", server.output)
        self.assertEqual(get_version(self.port)["host"], self.host)

    def test_dev_mode(self):
        """--dev needs nothing else: self-signed cert, random HSM key, temp volume."""
        env = cli_env()
        port = free_port()
        server = RunningServer(self, ["--dev", "--address", f"127.0.0.1:{port}"], env)
        self.assertIn("API Key     k1:", server.output)
        self.assertEqual(get_version(port)["host"], f"127.0.0.1:{port}")


class StartupErrorTests(ServerTestBase):
    def test_no_hsm_key(self):
        self.assertOneLineFailure(run_server_expecting_failure(self.args(), cli_env()), "no HSM key")

    def test_malformed_hsm_key(self):
        env = cli_env(MINIO_KMS_HSM_KEY="hsm:aes256:tooshort")
        self.assertOneLineFailure(run_server_expecting_failure(self.args(), env), "invalid HSM key")

    def test_missing_certificate(self):
        os.remove(self.cert)
        self.assertOneLineFailure(
            run_server_expecting_failure(self.args(), self.env()), f"cannot read certificate {self.cert}"
        )

    def test_unreadable_key(self):
        os.remove(self.key)
        os.makedirs(self.key)
        self.assertOneLineFailure(
            run_server_expecting_failure(self.args(), self.env()), f"cannot read private key {self.key}"
        )

    def test_missing_ca(self):
        with open(self.config, "a") as f:
            f.write("")
        with open(self.config) as f:
            text = f.read().replace(os.path.join(self.dir, "certs", "CAs"), "/no/such/CAs")
        with open(self.config, "w") as f:
            f.write(text)
        self.assertOneLineFailure(
            run_server_expecting_failure(self.args(), self.env()), "cannot read CA directory /no/such/CAs"
        )

    def test_config_not_yaml(self):
        with open(self.config, "w") as f:
            f.write("version: v1\ntls: [\n")
        self.assertOneLineFailure(run_server_expecting_failure(self.args(), self.env()), "not valid YAML")

    def test_config_unknown_version(self):
        with open(self.config) as f:
            text = f.read().replace("version: v1", "version: v9")
        with open(self.config, "w") as f:
            f.write(text)
        self.assertOneLineFailure(run_server_expecting_failure(self.args(), self.env()), "unsupported version 'v9'")

    def test_no_config(self):
        args = [self.volume, "--host", self.host, "--address", self.host]
        self.assertOneLineFailure(run_server_expecting_failure(args, self.env()), "no TLS configuration")

    def test_port_in_use(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", self.port))
            busy.listen(1)
            self.assertOneLineFailure(
                run_server_expecting_failure(self.args(), self.env()), f"cannot listen on {self.host}"
            )

    def test_volume_not_writable(self):
        """A volume path that cannot be a directory (root can write anywhere else)."""
        blocker = os.path.join(self.dir, "file")
        with open(blocker, "w") as f:
            f.write("x")
        args = self.args()
        args[0] = os.path.join(blocker, "volume")
        result = run_server_expecting_failure(args, self.env())
        self.assertOneLineFailure(result, os.path.join(blocker, "volume"))

    def test_second_server_on_volume(self):
        """A second server on the same volume is refused; the first keeps serving."""
        first = RunningServer(self, self.args(), self.env())
        other = f"127.0.0.1:{free_port()}"
        args = [self.volume, "--host", other, "--address", other, "--config", self.config]
        result = run_server_expecting_failure(args, self.env())
        self.assertOneLineFailure(result, "in use")
        self.assertIsNone(first.process.poll())
        self.assertEqual(get_version(self.port)["host"], self.host)

    def test_usage_error(self):
        self.assertOneLineFailure(run_server_expecting_failure(["--host"], self.env()), "server:")
