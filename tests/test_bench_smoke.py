"""
A quick run of every benchmark that C{make bench} runs (C{bench/run_all.py}
and its C{--quick} arguments), so that none rots: each must run to the end,
exit 0 and print figures.  The figures are never judged here.
C{bench/scale.py} has a test of its own (L{tests.test_bench_scale}).
"""

import os
import shutil
import subprocess
import sys

from twisted.internet import threads
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import REPO, cli_env

sys.path.insert(0, os.path.join(REPO, "bench"))
from run_all import BENCHMARKS  # noqa: E402

QUICK = {script: quick for script, _, quick in BENCHMARKS}


class BenchSmokeTests(TestCase):
    """Each benchmark of C{make bench} runs end to end with its quick arguments."""

    timeout = 300

    async def smoke(self, script: str, arguments: list[str] | None = None) -> str:
        """Run C{script} with C{arguments} (its quick ones by default); its output."""
        command = [sys.executable, os.path.join(REPO, "bench", script), *(arguments or QUICK[script])]
        result = await threads.deferToThread(
            subprocess.run, command, env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=280
        )
        self.assertEqual(result.returncode, 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        self.assertNotIn("Traceback", result.stderr)
        self.assertTrue(any(ch.isdigit() for ch in result.stdout), f"{script} printed no figure")
        return result.stdout

    def test_run_all_names_every_benchmark(self):
        """Every script in bench/ that measures something is run by make bench (or has its own test)."""
        own_runs = {
            "faults.py": "tests/faults (the short run)",
            "fuzz.py": "tests/test_fuzz",
            "write_timeline.py": "test_write_timeline below (it needs perf)",
        }
        scripts = {name for name in os.listdir(os.path.join(REPO, "bench")) if name.endswith(".py")}
        self.assertEqual(scripts - set(QUICK) - set(own_runs) - {"run_all.py"}, set())

    async def test_storage_append(self):
        await self.smoke("storage_append.py")

    async def test_policy_match(self):
        await self.smoke("policy_match.py")

    async def test_read_path(self):
        await self.smoke("read_path.py")

    async def test_write_path(self):
        await self.smoke("write_path.py")

    async def test_write_path_against_a_commit(self):
        """The A/B mode runs this tree and a commit's C{minkms} (here the same) and prints both and their ratios."""
        if shutil.which("git") is None or not os.path.exists(os.path.join(REPO, ".git")):
            raise SkipTest("no git checkout: the A/B mode unpacks the base commit with git archive")
        output = await self.smoke("write_path.py", ["--against", "HEAD", "--pairs", "1", "--seconds", "0.5"])
        self.assertIn("pair 1 new :", output)
        self.assertIn("pair 1 base:", output)
        self.assertRegex(output, r"p50 new / base: median \d+\.\d{3}")

    async def test_write_timeline(self):
        """The serial path of a write, from a real trace: every step has a row."""
        from write_timeline import perf_problem

        problem = perf_problem()
        if problem is not None:
            raise SkipTest(problem)
        output = await self.smoke("write_timeline.py", ["--seconds", "1"])
        for step in ("the leader has the request", "follower answering 2: log write ends", "the writer has the reply"):
            self.assertRegex(output, rf"\| {step} \| [\d,]+ \| [\d,]+ \| [\d,]+ \|")

    def test_write_timeline_joins_a_call_split_across_lines(self):
        """perf prints a call that another interrupted as a start line and a continued line: one event."""
        from write_timeline import parse_trace

        lines = [
            "100.000 ( 0.040 ms): python3/11 recvfrom(fd: 7<socket:[5]>, ubuf: 0x1, size: 65536)   = 400\n",
            "100.100 (         ): python3/11 pwritev2(fd: 9, vec: 0x2, vlen: 1, pos_l: 10, flags: 2) ...\n",
            "100.050 ( 0.030 ms): python3/12 sendto(fd: 13, buff: 0x3, len: 105)        = 105\n",
            "100.100 ( 0.500 ms): python3/11  ... [continued]: pwritev2())                 = 410\n",
            "100.700 ( 0.010 ms): python3/11 recvfrom(fd: 7, ubuf: 0x1, size: 65536) = -1 EAGAIN (Resource)\n",
        ]
        events = parse_trace(lines)
        self.assertEqual(
            [(e[2], e[3], e[4], e[5]) for e in events][:3],
            [(11, "recvfrom", 7, 400), (12, "sendto", 13, 105), (11, "pwritev2", 9, 410)],
        )
        self.assertAlmostEqual(events[2][1] - events[2][0], 0.5)
        self.assertEqual(events[3][5], -1)

    async def test_peer_messages(self):
        await self.smoke("peer_messages.py")

    async def test_sim_sweep(self):
        await self.smoke("sim_sweep.py")
