"""
A smoke run of C{bench/scale.py} with a handful of keys, so that the
benchmark does not rot: it must run to the end and print every figure.
The figures themselves are never judged here.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from tests.support import REPO, cli_env


class ScaleBenchSmokeTests(TestCase):
    """C{bench/scale.py} runs end to end on a tiny state."""

    def test_smoke(self):
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO, "bench", "scale.py"),
                "--keys",
                "30",
                "--enclaves",
                "3",
                "--baseline-keys",
                "10",
                "--decrypts",
                "10",
                "--sample-keys",
                "5",
            ],
            env=cli_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        for figure in (
            "30 keys in 3 enclaves",
            "10 keys in 3 enclaves",
            "kms.db:",
            "compaction:",
            "recovery (fresh process):",
            "server start-up until ready for writes:",
            "KEY:DECRYPT",
            "ratio of means",
            "join of a new member",
        ):
            self.assertIn(figure, result.stdout)
