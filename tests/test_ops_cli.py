"""
C{minkms profile} and C{minkms env} as a user runs them, against a real
node over real TLS.
"""

import io
import os
import pstats
import tarfile

from twisted.internet import threads
from twisted.trial import unittest

from minkms.apikey import generate_api_key
from minkms.hsm import SoftHSM
from tests.harness import InProcessServer
from tests.support import cli_env, run_cli


class ProfileTests(unittest.TestCase):
    timeout = 120

    async def setUp(self):
        self.server = InProcessServer(self)
        await self.server.wait_ready()

    async def test_profile_is_a_readable_pstats_dump(self):
        output = os.path.abspath(self.mktemp())
        env = cli_env(MINIO_KMS_API_KEY=self.server.api_key.text)
        result = await threads.deferToThread(
            run_cli, "profile", self.server.host, "-k", "--seconds", "1", "--heap", "-o", output, env=env
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"to {output}", result.stdout)
        with tarfile.open(output) as tar:
            self.assertEqual(sorted(tar.getnames()), ["cpu.pstats", "heap.txt"])
            dump = os.path.abspath(self.mktemp())
            with open(dump, "wb") as f:
                f.write(tar.extractfile("cpu.pstats").read())
        stats = pstats.Stats(dump, stream=io.StringIO())
        functions = {name for _, _, name in stats.stats}
        self.assertIn("_tick", functions)  # the node's timer ran on the profiled thread

    async def test_profiling_is_for_the_sysadmin(self):
        client = self.server.client(generate_api_key())
        self.addCleanup(client.close)
        status, _, _ = await client.request(b"POST", "/v1/debug/pprof?cpu=true")
        self.assertEqual(status, 403)

    async def test_status_while_profiling(self):
        from minkms.wire import kms_pb2 as pb

        client = self.server.client()
        self.addCleanup(client.close)
        status, _, _ = await client.request(b"POST", "/v1/debug/pprof?cpu=true&heap=false", b"")
        self.assertEqual(status, 200)
        again, _, body = await client.request(b"POST", "/v1/debug/pprof?cpu=true", b"")
        self.assertEqual(again, 409)
        running = pb.ProfileStatusResponse.FromString(await client.get("/v1/debug/pprof"))
        self.assertTrue(running.CPU)
        self.assertGreater(running.Started.seconds, 0)
        status, _, archive = await client.request(b"DELETE", "/v1/debug/pprof")
        self.assertEqual(status, 200)
        self.assertEqual(tarfile.open(fileobj=io.BytesIO(archive)).getnames(), ["cpu.pstats"])


class EnvTests(unittest.TestCase):
    def test_secrets_are_masked(self):
        api_key, hsm = generate_api_key(), SoftHSM.generate()
        result = run_cli(
            "env",
            env=cli_env(
                MINIO_KMS_API_KEY=api_key,
                MINIO_KMS_HSM_KEY=hsm.to_text(),
                MINIO_KMS_SERVER="kms1:7373,kms2:7373",
                MINIO_KMS_ENCLAVE="e1",
            ),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("MINIO_KMS_SERVER=kms1:7373,kms2:7373", result.stdout)
        self.assertIn("MINIO_KMS_ENCLAVE=e1", result.stdout)
        self.assertIn("MINIO_KMS_API_KEY=k1:****", result.stdout)
        self.assertIn("hsm:aes256:****", result.stdout)
        self.assertIn("MINIO_KMS_SSE_KEY=(not set)", result.stdout)
        for secret in (api_key[3:], hsm.to_text()[len("hsm:aes256:") :]):
            self.assertNotIn(secret, result.stdout)
