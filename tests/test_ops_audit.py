"""
The audit trail of a real node: one record per API request with who, what
and how it ended (never key material, plaintext or ciphertext); and
C{minkms audit verify} names the first edited, deleted or reordered record.
"""

import base64
import json
import os

from twisted.trial import unittest

from minkms.errors import KMSError
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import BY_NAME
from tests.harness import InProcessServer, write_config
from tests.support import cli_env, run_cli

PLAINTEXT = b"attack at dawn, secret plaintext"


class AuditTrailTests(unittest.TestCase):
    timeout = 120

    async def setUp(self):
        directory = os.path.abspath(self.mktemp())
        config = write_config(directory)
        self.audit_file = os.path.join(directory, "audit", "audit.log")
        with open(config, "a") as f:
            f.write(f"audit:\n  file: {self.audit_file}\n  max_size: 1MiB\n")
        self.server = InProcessServer(self, extra_args=["--config", config])
        await self.server.wait_ready()
        root = self.server.client()

        def call(name, message, enclave=""):
            return root.call(BY_NAME[name].code, message, enclave=enclave)

        await call("ENCLAVE:CREATE", pb.CreateEnclaveRequest(Name="e1"))
        await call("KEY:CREATE", pb.CreateKeyRequest(Name="k1"), "e1")
        for _ in range(5):
            sealed = await call("KEY:ENCRYPT", pb.EncryptRequest(Name="k1", Plaintext=PLAINTEXT), "e1")
        self.ciphertext = sealed.Ciphertext
        with self.assertRaises(KMSError):
            await call("KEY:ENCRYPT", pb.EncryptRequest(Name="missing", Plaintext=b"x"), "e1")
        await root.close()
        await self.server.stop()  # seals and flushes the trail
        with open(self.audit_file, "rb") as f:
            self.lines = f.read().splitlines(keepends=True)
        self.env = cli_env(MINIO_KMS_HSM_KEY=self.server.hsm.to_text())

    def verify(self, lines, env=None):
        path = os.path.join(os.path.dirname(self.audit_file), "checked.log")
        with open(path, "wb") as f:
            f.write(b"".join(lines))
        return run_cli("audit", "verify", path, env=env or self.env)

    def test_one_record_per_request(self):
        records = [json.loads(line) for line in self.lines]
        requests = [r for r in records if r.get("kind") == "request"]
        encrypts = [r for r in requests if r["command"] == "KEY:ENCRYPT"]
        self.assertEqual([r["status"] for r in encrypts], [200] * 5 + [404])
        self.assertEqual({r["object"] for r in encrypts}, {"k1", "missing"})
        first = encrypts[0]
        self.assertEqual(first["identity"], self.server.api_key.identity)
        self.assertEqual(first["enclave"], "e1")
        self.assertEqual(first["node"], self.server.host)
        self.assertGreaterEqual(first["latency_ms"], 0)
        self.assertIn("time", first)
        self.assertEqual(records[-1]["kind"], "seal")
        text = b"".join(self.lines)
        for secret in (
            PLAINTEXT,
            base64.b64encode(PLAINTEXT),
            self.ciphertext,
            base64.b64encode(self.ciphertext),
            self.ciphertext.hex().encode(),
        ):
            self.assertNotIn(secret, text)
        self.assertEqual(os.stat(self.audit_file).st_mode & 0o777, 0o600)

    def test_intact_trail_verifies(self):
        result = self.verify(self.lines)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"ok: {len(self.lines)} records", result.stdout)

    def assertNamed(self, result, line: int, words: str):
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"checked.log:{line}: record", result.stderr)
        self.assertIn(words, result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_edited_record_is_named(self):
        lines = list(self.lines)
        edited = [i for i, line in enumerate(lines) if b'"command":"KEY:ENCRYPT"' in line][2]
        lines[edited] = lines[edited].replace(b'"status":200', b'"status":201')
        self.assertNotEqual(lines[edited], self.lines[edited])
        self.assertNamed(self.verify(lines), edited + 1, "edited")

    def test_deleted_record_is_named(self):
        lines = list(self.lines)
        del lines[3]
        self.assertNamed(self.verify(lines), 4, "deleted")

    def test_reordered_records_are_named(self):
        lines = list(self.lines)
        lines[5], lines[6] = lines[6], lines[5]
        self.assertNamed(self.verify(lines), 6, "expected seq 5")

    def test_seal_needs_this_clusters_hsm_key(self):
        from minkms.hsm import SoftHSM

        other = cli_env(MINIO_KMS_HSM_KEY=SoftHSM.generate().to_text())
        result = self.verify(self.lines, env=other)
        self.assertEqual(result.returncode, 1)
        self.assertIn("seal does not verify", result.stderr)

    async def test_restart_continues_the_chain(self):
        config = write_config(self.mktemp())
        with open(config, "a") as f:
            f.write(f"audit:\n  file: {self.audit_file}\n")
        again = InProcessServer(
            self, hsm=self.server.hsm, volume=self.server.volume, port=self.server.port, extra_args=["--config", config]
        )
        await again.wait_ready()
        client = again.client()
        await client.get("/v1/metrics", accept=b"text/plain")
        await client.close()
        await again.stop()
        with open(self.audit_file, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        self.assertGreater(len(lines), len(self.lines))
        result = self.verify(lines)
        self.assertEqual(result.returncode, 0, result.stderr)


class RotationTests(unittest.TestCase):
    timeout = 120

    async def test_rotated_files_verify_as_one_chain(self):
        import glob

        directory = os.path.abspath(self.mktemp())
        config = write_config(directory)
        audit_file = os.path.join(directory, "audit.log")
        with open(config, "a") as f:
            f.write(f"audit:\n  file: {audit_file}\n  max_size: 2KiB\n")
        server = InProcessServer(self, extra_args=["--config", config])
        await server.wait_ready()
        root = server.client()
        await root.call(BY_NAME["ENCLAVE:CREATE"].code, pb.CreateEnclaveRequest(Name="e1"))
        await root.call(BY_NAME["KEY:CREATE"].code, pb.CreateKeyRequest(Name="k1"), enclave="e1")
        for _ in range(60):
            await root.call(BY_NAME["KEY:ENCRYPT"].code, pb.EncryptRequest(Name="k1", Plaintext=b"x"), enclave="e1")
        await root.close()
        await server.stop()
        files = sorted(glob.glob(audit_file + "*"), reverse=True)  # any order will do
        self.assertGreaterEqual(len(files), 3)
        for path in files:
            if path != audit_file:
                self.assertGreaterEqual(os.path.getsize(path), 2048)  # rotated once past max_size
        env = cli_env(MINIO_KMS_HSM_KEY=server.hsm.to_text())
        result = run_cli("audit", "verify", *files, env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("ok: ", result.stdout)
        written = [p for p in files if os.path.getsize(p)]
        self.assertGreaterEqual(len(written), 3)  # a middle file to leave out
        ordered = sorted(written, key=lambda p: json.loads(open(p, "rb").readline())["seq"])
        missing = run_cli("audit", "verify", *(ordered[:1] + ordered[2:]), env=env)
        self.assertEqual(missing.returncode, 1)
        self.assertIn(f"{ordered[2]}:1: record", missing.stderr)
        self.assertIn("deleted", missing.stderr)


class AuditStreamTests(unittest.TestCase):
    timeout = 120

    async def test_minkms_logs_audit_follows_the_trail(self):
        import subprocess
        import sys
        import time

        from twisted.internet import reactor, task, threads

        from tests.support import REPO, stop_process

        directory = os.path.abspath(self.mktemp())
        config = write_config(directory)
        with open(config, "a") as f:
            f.write(f"audit:\n  file: {os.path.join(directory, 'audit.log')}\n")
        server = InProcessServer(self, extra_args=["--config", config])
        await server.wait_ready()
        process = subprocess.Popen(
            [sys.executable, "-m", "minkms.cli.main", "logs", server.host, "-k", "--audit"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=cli_env(MINIO_KMS_API_KEY=server.api_key.text),
        )
        self.addCleanup(stop_process, process)
        deadline = time.monotonic() + 60
        while not server.service.ops.audit.subscribers:
            self.assertLess(time.monotonic(), deadline, process.stderr.read() if process.poll() else "")
            await task.deferLater(reactor, 0.1, lambda: None)
        client = server.client()
        await client.call(BY_NAME["ENCLAVE:CREATE"].code, pb.CreateEnclaveRequest(Name="streamed"))
        await client.close()
        while True:
            record = json.loads(await threads.deferToThread(process.stdout.readline))
            if record.get("command") == "ENCLAVE:CREATE":
                break
        self.assertEqual((record["object"], record["status"]), ("streamed", 200))
