"""
The short fault run of the suite: three real nodes, one seed, every kind
of fault for two and a half minutes, then the checker.  Zero anomalies,
except the classes gated below until their fixes land.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.faults import checker
from tests.faults.run import RunSettings, run

SEED = 10
SECONDS = 150

FRESH_READS_REQUIRED = False
"""
Stale reads are reported but tolerated until follower read leases land
(issue 8: reads on a follower are served from its own state, which may
miss a write acknowledged elsewhere).  The lead flips this when they do.
"""

WRITE_TIMEOUT_ANSWERS_503 = False
"""
Tolerate 500s, and the traceback each leaves in the log, from a write that
timed out (issue 10, item 1: C{Node._timed_out} errbacks the Failure that
C{addTimeout} hands it).  The lead flips this when the fix lands.
"""

TIMEOUT_TRACEBACK = "'Failure' object has no attribute 'errback'"


def blocking(findings: checker.Findings) -> dict[str, list[str]]:
    """The anomalies that fail the run, with the gates above applied."""
    result = {}
    for kind, found in findings.anomalies.items():
        if kind == checker.STALE_READ and not FRESH_READS_REQUIRED:
            continue
        if not WRITE_TIMEOUT_ANSWERS_503:
            if kind == checker.ANSWERED_500:
                continue
            if kind == checker.TRACEBACK:
                found = [line for line in found if TIMEOUT_TRACEBACK not in line]
        if found:
            result[kind] = found
    return result


class ShortRunTests(unittest.TestCase):
    timeout = SECONDS + 300

    async def _short_run(self):
        report = await run(self.mktemp(), RunSettings(SEED, SECONDS))
        print("\n" + "\n".join(report.lines()))
        self.assertGreater(sum(report.faults.values()), 5, "the nemesis hardly ran")
        self.assertGreater(report.outcomes[("write", "ok")], 100, "hardly any write was acknowledged")
        self.assertEqual(blocking(report.findings), {})

    def test_short_run(self):
        return defer.ensureDeferred(self._short_run())
