"""
Certificate reload without a restart: on SIGHUP, and when a file named by
C{config.yaml} changes (its mtime and size are polled every few seconds,
which costs a few C{stat} calls).

The whole TLS section is loaded and checked again with the start-up code;
only a complete, consistent set replaces the served one.  New connections
get the new certificate, open connections keep theirs.  A bad file keeps
the current certificates and is logged once per change.
"""

import os

from twisted.internet import task
from twisted.logger import Logger

from minkms.errors import StartupError
from minkms.server import config as cfg

log = Logger()

POLL_SECONDS = 5.0


def _signature(paths) -> tuple:
    marks = []
    for path in paths:
        try:
            targets = [path]
            if os.path.isdir(path):
                targets += sorted(os.path.join(path, n) for n in os.listdir(path))
            for target in targets:
                st = os.stat(target)
                marks.append((target, st.st_mtime_ns, st.st_size))
        except OSError:
            marks.append((path, None, None))
    return tuple(marks)


def watched_paths(config_path: str) -> list:
    """The config file and every certificate, key and CA path it names."""
    import yaml

    paths = [config_path]
    try:
        with open(config_path, "rb") as f:
            tls = (yaml.safe_load(f) or {}).get("tls") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return paths
    certs = tls.get("certs") or []
    for item in [certs] if isinstance(certs, dict) else certs:
        if isinstance(item, dict):
            paths += [str(item[k]) for k in ("cert", "key", "ca") if item.get(k)]
    if tls.get("ca"):
        paths.append(str(tls["ca"]))
    return paths


class CertificateReloader:
    """
    Keeps a L{minkms.tls.ServerContextFactory} serving the certificates
    that C{config.yaml} names now.

    @ivar credentials: the server credentials being served.
    @ivar ca_certificates: the CA certificates last loaded.
    """

    def __init__(
        self,
        config_path: str,
        context_factory,
        credentials,
        ca_certificates,
        metrics=None,
        interval: float = POLL_SECONDS,
        reactor=None,
    ) -> None:
        self._path = config_path
        self._factory = context_factory
        self.credentials = credentials
        self.ca_certificates = ca_certificates
        self._metrics = metrics
        self._interval = interval
        self._reactor = reactor
        self._seen = _signature(watched_paths(config_path))
        self._poll = None

    def start(self) -> None:
        """Poll the files every C{interval} seconds."""
        self._poll = task.LoopingCall(self.check)
        if self._reactor is not None:
            self._poll.clock = self._reactor
        self._poll.start(self._interval, now=False)

    def stop(self) -> None:
        """Stop polling."""
        if self._poll is not None and self._poll.running:
            self._poll.stop()

    def check(self) -> bool:
        """Reload if a watched file changed since the last look."""
        seen = _signature(watched_paths(self._path))
        if seen == self._seen:
            return False
        self._seen = seen
        return self.reload()

    def reload(self) -> bool:
        """Load and serve the certificates now; keep the old ones on any problem."""
        try:
            loaded = cfg.load_config(self._path)
            self._factory.replace_credentials(loaded.credentials)
        except (StartupError, ValueError) as e:
            log.warn("TLS certificates not reloaded, keeping the current ones: {why}", why=str(e))
            self._count("failed")
            return False
        self.credentials = loaded.credentials
        self.ca_certificates = loaded.ca_certificates
        log.info("TLS certificates reloaded from {path}", path=self._path)
        self._count("ok")
        return True

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.tls_reloads.labels(result).inc()

    def certificates(self):
        """C{(kind, index, expiry as Unix time)} of every loaded certificate."""
        for index, creds in enumerate(self.credentials):
            yield "server", index, creds.chain[0].not_valid_after_utc.timestamp()
        for index, cert in enumerate(self.ca_certificates):
            yield "ca", index, cert.not_valid_after_utc.timestamp()
