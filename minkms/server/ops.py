"""
Day-two operations of one node, wired in one place: metrics, the log
stream, the audit trail, certificate reload and profiling.

Their settings are optional sections of C{config.yaml}::

    metrics: public          # /v1/metrics without authentication (default: SysAdmin only)
    audit:
      file: /var/log/minkms/audit.log
      max_size: 100MiB       # rotate past this size
"""

import re
import signal
import threading

import attrs
import yaml
from twisted.internet import task
from twisted.logger import globalLogPublisher

from minkms.errors import StartupError
from minkms.server.audit import DEFAULT_MAX_SIZE, AuditWriter
from minkms.server.logstream import LogBuffer, LogResource
from minkms.server.metrics import Metrics, MetricsResource, instrument_volume
from minkms.server.observe import MeteredSwitchFactory, ObservedRoot, RequestObserver
from minkms.server.pprof import Profiler, ProfileResource
from minkms.server.tlsreload import CertificateReloader

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_UNITS = {"B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}


@attrs.frozen
class OpsConfig:
    """The C{metrics} and C{audit} sections of C{config.yaml}."""

    metrics_public: bool = False
    audit_file: str | None = None
    audit_max_size: int = DEFAULT_MAX_SIZE


def parse_size(text, what: str) -> int:
    """C{100MiB}, C{10MB}, C{4096} (bytes) as a number of bytes."""
    match = _SIZE.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise StartupError(f"invalid {what} {text!r}: use a size like 100MiB")
    return int(match.group(1)) * _UNITS[match.group(2) or "B"]


def load_ops_config(path: str | None) -> OpsConfig:
    """Read the optional sections; C{load_config} has checked the file already."""
    if not path:
        return OpsConfig()
    with open(path, "rb") as f:
        doc = yaml.safe_load(f) or {}
    metrics = doc.get("metrics", "sysadmin")
    if metrics not in ("public", "sysadmin"):
        raise StartupError(f"invalid config {path}: metrics must be 'public' or 'sysadmin'")
    audit = doc.get("audit") or {}
    if not isinstance(audit, dict) or (audit and not audit.get("file")):
        raise StartupError(f"invalid config {path}: audit needs 'file'")
    size = parse_size(audit["max_size"], "audit.max_size") if audit.get("max_size") else DEFAULT_MAX_SIZE
    return OpsConfig(metrics == "public", audit.get("file"), size)


class Operations:
    """The day-two parts of one node and their life cycle."""

    def __init__(self, settings, node, reactor, config_path: str | None) -> None:
        self._reactor = reactor
        self._config_path = config_path
        self.config = load_ops_config(config_path)
        self.metrics = Metrics()
        self.logs = LogBuffer()
        self.audit = None
        if self.config.audit_file:
            self.audit = AuditWriter(
                self.config.audit_file,
                settings.hsm.audit_seal_key(),
                settings.host,
                reactor,
                max_size=self.config.audit_max_size,
            )
            self.audit.open()
        self.reloader = None
        self._sysadmin = settings.sysadmin
        self._settings = settings
        self._node = node
        self._poll = None
        self._old_hup = None
        instrument_volume(node.volume, self.metrics)

    def resources(self) -> dict:
        """The endpoints under C{/v1} this module serves."""
        return {
            b"metrics": MetricsResource(self.metrics, self._sysadmin, self.config.metrics_public),
            b"debug/log": LogResource(self.logs, self._sysadmin, self.audit),
            b"debug/pprof": ProfileResource(Profiler(), self._sysadmin),
        }

    def observed(self, root):
        """The API's resource tree with every request counted and audited."""
        return ObservedRoot(root, RequestObserver(self.metrics, self.audit))

    def switch_factory(self, site, peer, **limits):
        """The listener's protocol factory, with connections counted."""
        return MeteredSwitchFactory(site, peer, self.metrics, **limits)

    def watch_certificates(self, context_factory) -> None:
        """Reload the served certificates when the files change (with C{--config})."""
        s = self._settings
        if self._config_path:
            self.reloader = CertificateReloader(
                self._config_path,
                context_factory,
                s.credentials,
                s.ca_certificates,
                self.metrics,
                reactor=self._reactor,
            )
            certificates = self.reloader.certificates
        else:

            def certificates():
                return (("server", i, c.chain[0].not_valid_after_utc.timestamp()) for i, c in enumerate(s.credentials))

        watcher = self.metrics.watch_node(self._node, certificates)
        self._poll = task.LoopingCall(watcher.sample)
        self._poll.clock = self._reactor

    def start(self) -> None:
        """Start the audit writer, log capture, polls and the SIGHUP handler."""
        globalLogPublisher.addObserver(self.logs)
        if self.audit is not None:
            self.audit.start()
        if self._poll is not None:
            self._poll.start(1.0, now=False)
        if self.reloader is not None:
            self.reloader.start()
            if threading.current_thread() is threading.main_thread():
                self._old_hup = signal.signal(
                    signal.SIGHUP, lambda *_: self._reactor.callFromThread(self.reloader.reload)
                )

    async def stop(self) -> None:
        """Stop everything started, the audit writer last (it seals and flushes)."""
        globalLogPublisher.removeObserver(self.logs)
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        if self.reloader is not None:
            self.reloader.stop()
            if self._old_hup is not None:
                signal.signal(signal.SIGHUP, self._old_hup)
                self._old_hup = None
        if self.audit is not None:
            await self.audit.stop()
