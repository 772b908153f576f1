"""
A follower cut off from its leader past its read lease, on real processes
(issue 10): it must not answer reads from its own state, which misses a
write the leader acknowledged meanwhile.  One scripted scenario, run on the
real server and on the L{tests.faults.mutations.serves_after_lease} mutant,
the deterministic counterpart of the simulator's lease mutation tests:

 1. Three nodes whose election timeout (2 s) is longer than the read lease
    (1 s), so that the follower F outlives its lease while it still follows
    the leader: only the lease rule then stands between F and a stale read.
 2. Import C{k0} through the leader; wait until F answers it and says that
    it serves reads under a lease (C{Minkms-Reads: lease}).
 3. Cut the link between F and the leader, both ways; F keeps its link to
    the other follower.
 4. Import C{k1} through the leader: 200, once F's lease ran out as the
    leader counts it.
 5. KEY:STATUS of C{k1} on F.  The real server cannot prove its state
    fresh: it asks the leader (ReadIndex), which it cannot reach, until
    either its read times out (L{STILL_WAITING}, then the client asks
    again) or its election timer fires and it drops the leader, from when
    on it refuses at once (L{NO_LEADER}).  Which comes first depends on
    the machine's load; the answer after the waits does not.  The mutant
    answers from its own state: C{k1} does not exist.
 6. Heal; every node answers the same final state, and the fault suite's
    checker judges the whole history.
"""

import attrs
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import client as webclient

from minkms.tls import ClientTLS
from tests.faults import checker
from tests.faults.cluster import FaultCluster
from tests.faults.run import converge
from tests.faults.workload import OK, Names, Workload
from tests.harness import until

ELECTION_TIMEOUT = "2s"
"""Longer than the 1 s read lease (the default), in both runs."""

STILL_WAITING = (
    "cannot serve the read: this node could not confirm within 5s that its state is fresh "
    "(no lease, leader unreachable)"
)
"""A read that timed out waiting for the unreachable leader: F may still answer otherwise, so ask again."""

NO_LEADER = "no leader: this node cannot prove its state is fresh and cluster.reads_without_leader is refuse"
"""What F answers once it has given up on the leader."""

KEY_NOT_FOUND = "key does not exist"


@attrs.define
class Outcome:
    """What the scenario saw: F's answer to the read, and the checker's findings."""

    answer: tuple[int, str]
    waits: int
    findings: checker.Findings

    def lines(self) -> list[str]:
        """The outcome, for the test's output."""
        status, text = self.answer
        return [
            f"F answered {status} {text!r} after {self.waits} read(s) timed out waiting for the leader",
            "anomalies: " + (", ".join(f"{k}: {n}" for k, n in self.findings.counts().items()) or "none"),
        ]


async def read_mode(cluster: FaultCluster, node) -> str:
    """How C{node} serves reads now (the C{Minkms-Reads} header of its readiness check)."""
    agent = webclient.Agent(reactor, contextFactory=ClientTLS(cluster.api_key, insecure=True))
    response = await agent.request(b"GET", f"https://{node.address}/v1/health/ready".encode())
    await webclient.readBody(response)
    return response.headers.getRawHeaders(b"minkms-reads", [b""])[0].decode("ascii")


def answer_of(record) -> tuple[int, str]:
    """(HTTP status, error text or the version read) of a recorded KEY:STATUS."""
    if record.outcome == OK:
        return 200, f"version {record.value}"
    return record.status or 0, record.error


async def expect_ok(operation, what: str) -> None:
    """Await a workload operation; fail saying C{what} was not acknowledged."""
    record = await operation
    if record.outcome != OK:
        raise AssertionError(f"{what}: {record.status} {record.error}")


async def cut_off_follower_reads(base: str, mutant: str | None) -> Outcome:
    """Run the scenario of this module once, on the real server or C{mutant}."""
    cluster = FaultCluster(base, 3, mutant, small_disk=False, election_timeout=ELECTION_TIMEOUT)
    workload = None
    try:
        await cluster.start()
        workload = Workload(cluster, seed=0, clients=0, names=Names(keys=2, identities=0, policies=0))
        before, after = workload.names.keys
        leader = await until(cluster.leader, "a leader")
        follower = next(node for node in cluster.nodes if node is not leader)

        async def one(node, kind, name):
            return await workload.one(0, node, kind, workload.rng, name)

        await expect_ok(one(leader, "import", before), f"import of {before} through the leader")

        async def leased_and_current():
            if await read_mode(cluster, follower) != "lease":
                return False
            return (await one(follower, "status", before)).outcome == OK

        await until(leased_and_current, f"{follower.name} answering {before} under a read lease")

        cluster.cut(follower, leader)
        await expect_ok(one(leader, "import", after), f"import of {after} with {follower.name} cut off")

        waits = []

        async def settled():
            record = await one(follower, "status", after)
            if (record.status, record.error) == (503, STILL_WAITING):
                waits.append(record)
                return None
            return record

        answer = answer_of(await until(settled, f"{follower.name} answering other than {STILL_WAITING!r}"))

        cluster.heal()
        final = await converge(cluster, workload)
        logs = {node.name: node.log() for node in cluster.nodes}
        findings = checker.check_run(workload.records, final, logs, [], workload.decrypt_mismatches)
        return Outcome(answer, len(waits), findings)
    finally:
        if workload is not None:
            await workload.close()
        await cluster.stop()


class LeaseCutOffTests(unittest.TestCase):
    """The scenario of this module on the real server, then on the mutant."""

    timeout = 300

    async def _scenario(self, mutant):
        outcome = await cut_off_follower_reads(self.mktemp(), mutant)
        print("\n" + "\n".join(outcome.lines()))
        return outcome

    async def _real_server(self):
        outcome = await self._scenario(None)
        self.assertEqual(outcome.answer, (503, NO_LEADER))
        self.assertEqual(outcome.findings.counts(), {})

    def test_real_server_refuses_after_its_lease(self):
        """
        Cut off past its lease, the real follower answers 503 (it cannot
        prove its state fresh), never the stale 404, and the cluster
        converges once healed.
        """
        return defer.ensureDeferred(self._real_server())

    async def _mutant(self):
        outcome = await self._scenario("serves_after_lease")
        self.assertEqual(outcome.answer, (404, KEY_NOT_FOUND), "a follower serving after its lease went unnoticed")
        self.assertEqual(outcome.findings.counts(), {checker.STALE_READ: 1})

    def test_serving_after_lease_is_caught(self):
        """
        The mutant follower answers from its stale state that the key the
        leader acknowledged does not exist, and the checker calls it a
        stale read.
        """
        return defer.ensureDeferred(self._mutant())
