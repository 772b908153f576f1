"""The local CLI commands, run as a user runs them (subprocesses)."""

import base64
import json
import os

from twisted.trial import unittest

from minkms.apikey import APIKey
from minkms.hsm import SoftHSM
from tests.support import REPO, cli_env, read_tsv, run_cli, write_server_certificate


class SoftHSMCommandTests(unittest.TestCase):
    def test_soft_hsm(self):
        """--soft-hsm prints a fresh key on stdout and says it is shown once."""
        first, second = run_cli("--soft-hsm"), run_cli("--soft-hsm")
        self.assertEqual(first.returncode, 0)
        key = first.stdout.strip()
        self.assertTrue(key.startswith("hsm:aes256:"))
        self.assertEqual(len(base64.b64decode(key[11:], validate=True)), 32)
        self.assertIn("only time it is shown", first.stderr)
        self.assertNotEqual(key, second.stdout.strip())


class IdentityCommandTests(unittest.TestCase):
    def test_api_key_identity(self):
        """identity k1:KEY prints exactly the key's identity (vector file)."""
        for row in read_tsv("api-key-identity.tsv")[:3]:
            result = run_cli("identity", row["api_key"])
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout.strip(), row["identity"])

    def test_hsm_key(self):
        """identity HSM-KEY prints the derived SysAdmin API key and identity."""
        hsm = SoftHSM.generate()
        result = run_cli("identity", hsm.to_text(), "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        shown = json.loads(result.stdout)
        self.assertEqual(shown["api_key"], hsm.sysadmin_api_key())
        self.assertEqual(shown["identity"], APIKey.parse(hsm.sysadmin_api_key()).identity)
        human = run_cli("identity", hsm.to_text())
        self.assertIn(hsm.sysadmin_api_key(), human.stdout)

    def test_hsm_key_not_in_argv(self):
        """
        The HSM key may come on standard input (C{-} or piped) or from
        $MINIO_KMS_HSM_KEY, so it never has to sit in the process list.
        """
        hsm = SoftHSM.generate()
        expected = {"api_key": hsm.sysadmin_api_key(), "identity": APIKey.parse(hsm.sysadmin_api_key()).identity}
        for args, kw in (
            (("identity", "-", "--json"), {"input": hsm.to_text() + "\n"}),
            (("identity", "--json"), {"input": hsm.to_text() + "\n"}),
            (("identity", "--json"), {"env": cli_env(MINIO_KMS_HSM_KEY=hsm.to_text())}),
        ):
            result = run_cli(*args, **kw)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(json.loads(result.stdout), expected, args)
        result = run_cli("identity", "-", input="")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip().splitlines(), ["minkms: error: no key on standard input"])

    def test_new_key_pair(self):
        """identity with no argument mints a key pair whose identity matches."""
        result = run_cli("identity")
        self.assertEqual(result.returncode, 0)
        words = result.stdout.split()
        key = next(w for w in words if w.startswith("k1:"))
        ident = next(w for w in words if w.startswith("h1:"))
        self.assertEqual(APIKey.parse(key).identity, ident)
        self.assertIn("only time it is shown", result.stdout)

    def test_certificate_file(self):
        """identity CERT-FILE prints the certificate's identity."""
        d = self.mktemp()
        os.makedirs(d)
        _, cert = write_server_certificate(d)
        result = run_cli("identity", cert)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.strip().startswith("h1:"))

    def test_bad_input(self):
        """Bad keys give one line on stderr and a non-zero exit."""
        for arg in ["k1:short", "hsm:aes256:AAAA", "/no/such/file"]:
            result = run_cli("identity", arg)
            self.assertNotEqual(result.returncode, 0)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            self.assertNotIn("Traceback", result.stderr)

    def test_unknown_command(self):
        """An unknown command is one line and exit status 1."""
        result = run_cli("frobnicate")
        self.assertEqual(result.returncode, 1)
        self.assertIn("unknown command", result.stderr)

    def test_bin_script(self):
        """bin/minkms runs from a checkout."""
        import subprocess
        import sys

        result = subprocess.run(
            [sys.executable, os.path.join(REPO, "bin", "minkms"), "--version"],
            capture_output=True,
            text=True,
            env=cli_env(),
        )
        self.assertEqual(result.returncode, 0)
        self.assertIn("minkms version", result.stdout)
