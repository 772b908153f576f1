"""
The short fault run of the suite: three real nodes, one seed, every kind
of fault for two minutes, then the checker.  Zero anomalies,
except the classes gated below until their fixes land.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.faults import checker
from tests.faults.run import RunSettings, run

SEED = 10
SECONDS = 120

FRESH_READS_REQUIRED = True
"""
Stale reads are reported but tolerated until follower read leases land
(issue 8: reads on a follower are served from its own state, which may
miss a write acknowledged elsewhere).  The lead flips this when they do.
So are violations that the checker could not decide stale reads explain
within its search budget: with fresh reads, the strict check decides them.
"""

WRITE_TIMEOUT_ANSWERS_503 = True
"""
Tolerate 500s, and the traceback each leaves in the log, from a write that
timed out (issue 10, item 1: C{Node._timed_out} errbacks the Failure that
C{addTimeout} hands it).  The lead flips this when the fix lands.
"""

REFUSALS_ON_FRESH_STATE = True
"""
Tolerate writes refused (404/409) on a state that missed a write
acknowledged before they began: the leader dry-runs a write on its applied
state, which can lag what was acknowledged (a new leader before it applied
its predecessor's entries).  Found by this suite; flip when fixed.
"""

CLEAN_STOP_WITH_WRITES_IN_FLIGHT = True
"""
Tolerate the traceback of a node stopped by SIGTERM while writes are in
flight: an append after the volume closed crashes the node ("storage
failed: volume is closed") and its fatal hook stops a reactor that is no
longer running.  Found by this suite; flip when fixed.
"""

TOLERATED = [
    (lambda: FRESH_READS_REQUIRED, checker.STALE_READ, ""),
    (lambda: FRESH_READS_REQUIRED, checker.STALE_OR_WORSE, ""),
    (lambda: WRITE_TIMEOUT_ANSWERS_503, checker.ANSWERED_500, ""),
    (lambda: WRITE_TIMEOUT_ANSWERS_503, checker.TRACEBACK, "'Failure' object has no attribute 'errback'"),
    (lambda: REFUSALS_ON_FRESH_STATE, checker.STALE_REJECTION, ""),
    (lambda: CLEAN_STOP_WITH_WRITES_IN_FLIGHT, checker.TRACEBACK, "ReactorNotRunning"),
]
"""(whether it is fixed, anomaly class, text that identifies it) of each known problem."""


def blocking(findings: checker.Findings) -> dict[str, list[str]]:
    """The anomalies that fail the run: all but those of known, unfixed problems."""
    result = {}
    for kind, found in findings.anomalies.items():
        for fixed, known_kind, text in TOLERATED:
            if known_kind == kind and not fixed():
                found = [line for line in found if text not in line]
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
