"""
One fault run: start the cluster, run the workload under the nemesis,
heal, read the final state from every node, check, and report figures.
Used by the short run in the suite and by C{bench/faults.py}.
"""

import collections
import os
import pickle
import time

import attrs
from twisted.internet import defer

from tests.faults import checker
from tests.faults.cluster import PROXY, FaultCluster, sleep
from tests.faults.nemesis import KINDS, Nemesis, Settings
from tests.faults.workload import OK, REJECTED, WRITES, Workload

FINAL_READS = ("status", "encrypt")
CONVERGE_SECONDS = 60.0


@attrs.define
class RunSettings:
    """What to run: the seed decides the schedule, the nodes and ops each client picks."""

    seed: int
    seconds: float
    nodes: int = 3
    clients: int = 8
    kinds: tuple = KINDS
    rounds: int | None = None
    mutant: str | None = None
    nemesis: Settings = attrs.Factory(Settings)


@attrs.define
class Report:
    """Figures and findings of one run."""

    settings: RunSettings
    mechanisms: list[str]
    outcomes: collections.Counter
    faults: collections.Counter
    availability: dict
    findings: checker.Findings
    elapsed: float
    errors: collections.Counter = attrs.Factory(collections.Counter)

    def lines(self) -> list[str]:
        """The report, one figure per line."""
        s = self.settings
        out = [
            f"seed {s.seed}, {s.nodes} nodes, {s.clients} clients, {self.elapsed:.0f} s"
            + (f", mutant {s.mutant}" if s.mutant else "")
        ]
        out += self.mechanisms
        for group in ("write", "read"):
            counts = {o: n for (g, o), n in sorted(self.outcomes.items()) if g == group}
            out.append(f"{group}s: " + ", ".join(f"{o} {n}" for o, n in counts.items()))
        out.append("faults: " + (", ".join(f"{k} {n}" for k, n in sorted(self.faults.items())) or "none"))
        out.append(
            "writes answered per phase (of those sent to a running node): "
            + ", ".join(
                f"{kind} {ok}/{total} ({100 * ok / total:.0f}%)"
                for kind, (ok, total) in sorted(self.availability.items())
                if total
            )
        )
        out.append(
            "most frequent write errors: "
            + "; ".join(f"{n} x {o} {text}" for (o, text), n in self.errors.most_common(5))
        )
        counts = self.findings.counts()
        out.append("anomalies: " + (", ".join(f"{k}: {n}" for k, n in counts.items()) or "none"))
        for kind, found in sorted(self.findings.anomalies.items()):
            for line in found[:3]:
                out.append(f"  [{kind}] {line}")
        if self.findings.undecided:
            out.append(f"undecided objects (search budget): {len(self.findings.undecided)}")
        return out


async def run(base: str, settings: RunSettings, progress=None) -> Report:
    """Run once in directory C{base}; C{progress(line)} hears about each phase."""
    started = time.monotonic()
    cluster = FaultCluster(base, settings.nodes, settings.mutant, small_disk="disk_full" in settings.kinds)
    workload = None
    try:
        await cluster.start()
        workload = Workload(cluster, settings.seed, settings.clients)
        await workload.setup()
        nemesis = Nemesis(cluster, settings.seed, settings.kinds, settings.nemesis)
        mechanisms = [f"partitions: {PROXY}", cluster.describe_disk()]
        if progress:
            for line in mechanisms:
                progress(line)
        clients = defer.ensureDeferred(workload.run())
        await nemesis.run(settings.seconds, settings.rounds)
        await nemesis.recover()
        await sleep(3.0)
        workload.stopping = True
        await clients
        final = await converge(cluster, workload)
        logs = {node.name: node.log() for node in cluster.nodes}
        with open(os.path.join(base, "history.pickle"), "wb") as f:
            pickle.dump((workload.records, final), f)
        findings = checker.check_run(workload.records, final, logs, nemesis.unexpected, workload.decrypt_mismatches)
        return Report(
            settings,
            mechanisms,
            outcomes(workload.records),
            collections.Counter(p.kind for p in nemesis.phases),
            availability(workload.records, nemesis.phases),
            findings,
            time.monotonic() - started,
            write_errors(workload.records),
        )
    finally:
        if workload is not None:
            await workload.close()
        await cluster.stop()


async def final_reads(cluster, workload) -> list:
    """Every object read on every node, after the run."""
    records = []
    names = workload.names
    for node in cluster.nodes:
        for name in names.keys:
            for kind in FINAL_READS:
                records.append(await workload.one(-1, node, kind, workload.rng, name))
        for name in names.identities:
            records.append(await workload.one(-1, node, "id_status", workload.rng, name))
        for name in names.policies:
            records.append(await workload.one(-1, node, "pol_get", workload.rng, name))
    return records


async def converge(cluster, workload) -> list:
    """Final reads once the nodes agree (or the deadline passes); only the last round is kept."""
    deadline = time.monotonic() + CONVERGE_SECONDS
    while True:
        start = len(workload.records)
        final = await final_reads(cluster, workload)
        del workload.records[start:]
        trial = checker.Findings()
        checker.check_final(final, [], trial)
        if not trial.anomalies or time.monotonic() > deadline:
            return final
        await sleep(1.0)


def outcomes(records) -> collections.Counter:
    """Operations by (write or read, outcome)."""
    return collections.Counter(("write" if r.kind in WRITES else "read", r.outcome) for r in records)


def write_errors(records) -> collections.Counter:
    """Why writes were not done, by outcome and the error's first words."""
    return collections.Counter(
        (r.outcome, " ".join(r.error.split()[:6]))
        for r in records
        if r.kind in WRITES and r.outcome not in (OK, REJECTED) and r.client >= 0
    )


def availability(records, phases) -> dict:
    """
    Per fault kind (and "no fault"): writes answered (done, or a client
    error), writes sent to a node that was running (a refused connection
    is a client's choice of a node that is down, not an unavailable cluster).
    """
    spans = [(p.start, p.end or float("inf"), p.kind) for p in phases]
    result = collections.defaultdict(lambda: [0, 0])
    for r in records:
        if r.kind not in WRITES or r.client < 0 or "connection refused" in r.error:
            continue
        kind = next((k for start, end, k in spans if start <= r.invoked < end), "no fault")
        result[kind][1] += 1
        result[kind][0] += r.outcome in (OK, REJECTED)
    return {k: tuple(v) for k, v in result.items()}
