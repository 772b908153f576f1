"""
The node's metrics, served on C{/v1/metrics} in the Prometheus text
format (docs/metrics.md lists each one).

Request, TLS and storage figures are counted as they happen.  Raft and
node figures are read at scrape time by L{read_node}, the one function
that knows the node's shape, so it is the only thing to port when the
node driver changes.  No label carries anything a tenant chose: commands
are the protocol's fixed names, nodes are numeric IDs.
"""

import bisect
import time

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from minkms.errors import ErrPermission
from minkms.server.api import APIResource
from minkms.server.http import caller_identity, send_error, send_ok

ROLES = ("Leader", "Follower", "Candidate", "PreCandidate")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@attrs.frozen
class NodeFigures:
    """What L{read_node} reads from a node at one instant."""

    node_id: int
    role: str
    term: int
    leader: int
    commit: int
    applied: int
    last_index: int
    snapshot_index: int
    match: dict
    db_size: int
    enclaves: int
    keys: int
    identities: int
    policies: int


def read_node(node) -> NodeFigures:
    """
    The node's Raft and state figures, from C{node.core.status()} and the
    node's public attributes only.  Port this function (nothing else) when
    the node driver is split.
    """
    status = node.core.status()
    enclaves = node.state.state.enclaves.values()
    return NodeFigures(
        node_id=status.node_id,
        role=status.role,
        term=status.term,
        leader=status.leader,
        commit=status.commit,
        applied=status.applied,
        last_index=status.last_index,
        snapshot_index=status.snapshot_index,
        match={peer: pr.match for peer, pr in status.progress.items() if peer != status.node_id},
        db_size=node.volume.size,
        enclaves=len(node.state.state.enclaves),
        keys=sum(len(e.keys) for e in enclaves),
        identities=sum(len(e.identities) for e in enclaves),
        policies=sum(len(e.policies) for e in enclaves),
    )


def lease_holders(node) -> dict:
    """
    C{{node_id: seconds left}} of the read leases this node knows of: on
    the leader its own and every holder's, on a follower its own
    (L{minkms.raft.lease}).
    """
    return node.core.read_leases()


class RaftWatcher:
    """
    Counts elections, leader changes and snapshots by watching the figures
    change (once a second and at every scrape): Raft does not report them.
    """

    def __init__(self, read) -> None:
        self._read = read
        self._last = None
        self.elections = 0
        self.leader_changes = 0
        self.snapshots = 0

    def sample(self) -> NodeFigures:
        """Read the node now and count what changed since the last read."""
        now = self._read()
        last, self._last = self._last, now
        if last is not None:
            self.elections += max(0, now.term - last.term)
            if now.leader != last.leader and now.leader >= 0:
                self.leader_changes += 1
            if now.snapshot_index > last.snapshot_index:
                self.snapshots += 1
        return now


class NodeCollector:
    """A Prometheus collector that reads the node when scraped."""

    def __init__(self, watcher: RaftWatcher, leases, certificates) -> None:
        self._watcher = watcher
        self._leases = leases
        self._certificates = certificates

    def collect(self):
        """Yield the node's metric families (prometheus_client's collector protocol)."""
        f = self._watcher.sample()
        w = self._watcher

        def gauge(name, doc, value, kind=GaugeMetricFamily):
            family = kind(name, doc)
            family.add_metric([], value)
            return family

        yield gauge("minkms_raft_node_id", "This node's Raft ID.", f.node_id)
        role = GaugeMetricFamily("minkms_raft_role", "1 for this node's current Raft role.", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1 if f.role == name else 0)
        yield role
        yield gauge("minkms_raft_term", "Current Raft term.", f.term)
        yield gauge("minkms_raft_leader_id", "ID of the known leader, -1 if none.", f.leader)
        yield gauge("minkms_raft_commit_index", "Highest log index known committed.", f.commit)
        yield gauge("minkms_raft_applied_index", "Highest log index applied to the state.", f.applied)
        yield gauge("minkms_raft_last_index", "Highest index in this node's log.", f.last_index)
        yield gauge("minkms_raft_snapshot_index", "Index of the latest snapshot (log compaction).", f.snapshot_index)
        match = GaugeMetricFamily(
            "minkms_raft_follower_match_index",
            "Leader only: highest index known replicated on each follower.",
            labels=["follower"],
        )
        lag = GaugeMetricFamily(
            "minkms_raft_follower_lag_entries",
            "Leader only: entries each follower is behind the leader's log.",
            labels=["follower"],
        )
        for peer, value in sorted(f.match.items()):
            match.add_metric([str(peer)], value)
            lag.add_metric([str(peer)], max(0, f.last_index - value))
        yield match
        yield lag
        leases = GaugeMetricFamily(
            "minkms_raft_lease_seconds_left", "Seconds left on each read lease this node knows of.", labels=["holder"]
        )
        for holder, left in sorted(self._leases().items()):
            leases.add_metric([str(holder)], left)
        yield leases
        for name, doc, value in (
            ("minkms_raft_elections", "Elections seen (term increases).", w.elections),
            ("minkms_raft_leader_changes", "Times the known leader changed.", w.leader_changes),
            ("minkms_raft_snapshots", "Snapshots (log compactions) seen.", w.snapshots),
        ):
            yield gauge(name, doc, value, CounterMetricFamily)
        yield gauge("minkms_storage_db_size_bytes", "Bytes of kms.db written and fsynced.", f.db_size)
        yield gauge("minkms_state_enclaves", "Enclaves in the applied state.", f.enclaves)
        yield gauge("minkms_state_keys", "Keys in all enclaves.", f.keys)
        yield gauge("minkms_state_identities", "Identities in all enclaves.", f.identities)
        yield gauge("minkms_state_policies", "Policies in all enclaves.", f.policies)
        expiry = GaugeMetricFamily(
            "minkms_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which each configured certificate expires.",
            labels=["kind", "index"],
        )
        for kind, index, not_after in self._certificates():
            expiry.add_metric([kind, str(index)], not_after)
        yield expiry


class RequestTally:
    """
    API requests by command and status, and their latencies by command,
    counted in plain numbers: the reactor thread, which answers requests
    and scrapes alike, is the only one to touch them, so a request costs
    no lock and no labelled-series lookup.  A collector for the registry.
    """

    def __init__(self, buckets=LATENCY_BUCKETS) -> None:
        self._bounds = tuple(buckets)
        self._answered: dict[tuple[str, str], list] = {}
        self._latency: dict[str, list] = {}

    def observe(self, command: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (command, status)
        answered = self._answered.get(key)
        if answered is None:
            answered = self._answered[key] = [0, time.time()]
        answered[0] += 1
        latency = self._latency.get(command)
        if latency is None:
            latency = self._latency[command] = [0.0] + [0] * (len(self._bounds) + 1)
        latency[0] += seconds
        latency[1 + bisect.bisect_left(self._bounds, seconds)] += 1

    def collect(self):
        """Yield the two families (prometheus_client's collector protocol)."""
        answered = CounterMetricFamily(
            "minkms_api_requests", "API requests answered, by command and status.", labels=["command", "status"]
        )
        for (command, status), (count, created) in sorted(self._answered.items()):
            answered.add_metric([command, str(status)], count, created=created)
        yield answered
        latency = HistogramMetricFamily(
            "minkms_api_request_duration_seconds",
            "Time from a request's arrival to its answer, by command.",
            labels=["command"],
        )
        bounds = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        for command, (total, *counts) in sorted(self._latency.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, counts):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([command], cumulative, total)
        yield latency


class Metrics:
    """
    Every metric of one node, in its own registry (so several in-process
    nodes do not mix).  Counting methods are cheap; C{requests.observe}
    (L{RequestTally}) is for the reactor thread, the others are safe from
    any thread.
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.requests = RequestTally()
        r.register(self.requests)
        self.in_flight = Gauge("minkms_api_requests_in_flight", "API requests being served.", registry=r)
        self.handshakes = Counter("minkms_tls_handshakes", "TLS handshakes completed.", registry=r)
        self.handshake_failures = Counter(
            "minkms_tls_handshake_failures", "TLS connections closed before the handshake completed.", registry=r
        )
        self.connections = Gauge("minkms_connections_open", "TLS connections open (API and peers).", registry=r)
        self.fsync = Histogram(
            "minkms_storage_fsync_duration_seconds", "Time of each fsync of kms.db.", buckets=FSYNC_BUCKETS, registry=r
        )
        self.batch = Histogram(
            "minkms_storage_group_commit_records",
            "Records written by each group commit (one write, one fsync).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.tls_reloads = Counter("minkms_tls_reloads", "Certificate reloads, by result.", ["result"], registry=r)
        self.watcher = None

    def watch_node(self, node, certificates=lambda: ()) -> RaftWatcher:
        """Register the scrape-time collector of C{node}."""
        self.watcher = RaftWatcher(lambda: read_node(node))
        self.registry.register(NodeCollector(self.watcher, lambda: lease_holders(node), certificates))
        return self.watcher

    def exposition(self) -> tuple[bytes, bytes]:
        """The content type and body of a scrape."""
        return CONTENT_TYPE_LATEST.encode("ascii"), generate_latest(self.registry)


class TimedFiles:
    """
    The volume's file operations with each C{sync} timed: wraps the
    L{minkms.storage.files.OSFiles} a volume was opened with.
    """

    def __init__(self, files, histogram, clock=time.perf_counter) -> None:
        self._files = files
        self._histogram = histogram
        self._clock = clock

    def sync(self, fd: int) -> None:
        """fsync C{fd}, timed."""
        self._timed(self._files.sync, fd)

    def write_synced(self, fd: int, data: bytes, offset: int) -> None:
        """Write and fsync C{data} (an append), timed as one fsync."""
        self._timed(self._files.write_synced, fd, data, offset)

    def _timed(self, operation, *args) -> None:
        start = self._clock()
        try:
            operation(*args)
        finally:
            self._histogram.observe(self._clock() - start)

    def __getattr__(self, name):
        return getattr(self._files, name)


def instrument_volume(volume, metrics: Metrics) -> None:
    """Time the volume's fsyncs and count the records of each group commit."""
    volume.instrument(lambda files: TimedFiles(files, metrics.fsync), metrics.batch.observe)


class MetricsResource(APIResource):
    """C{GET /v1/metrics}: SysAdmin only unless C{metrics: public}."""

    isLeaf = True
    exact = True

    def __init__(self, metrics: Metrics, sysadmin: str, public: bool) -> None:
        super().__init__()
        self._metrics = metrics
        self._sysadmin = sysadmin
        self._public = public

    def render_GET(self, request):
        if not self._public and caller_identity(request) != self._sysadmin:
            return send_error(request, ErrPermission)
        ctype, body = self._metrics.exposition()
        return send_ok(request, body, ctype)
