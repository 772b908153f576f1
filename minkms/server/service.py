"""
C{makeService} for C{twistd -n minkms ...} and C{minkms server}: turns
options into a running node (volume, node driver, TLS listener, banner).

Everything that can be wrong with the settings is found here, before the
reactor runs, and reported as one line (a L{SystemExit} with the text).
"""

import os
import resource
import shutil
import socket
import sys
import tempfile

import attrs
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, error as ierror, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from minkms.apikey import APIKey
from minkms.errors import StartupError
from minkms.hsm import SoftHSM
from minkms.server import config as cfg, peer
from minkms.server.api import build_root
from minkms.server.banner import banner
from minkms.server.collector import tune_collector
from minkms.server.http import APISite
from minkms.server.limits import DESCRIPTOR_MARGIN, ConnectionLimits, fit_to_descriptors
from minkms.server.ops import Operations
from minkms.server.prompttls import PromptTLSFactory
from minkms.tls import ServerContextFactory

log = Logger()


class Options(usage.Options):
    """The options of C{minkms server} and C{twistd minkms}."""

    synopsis = "VOLUME [--host HOST:PORT] [--address IP:PORT] [--config FILE] [--dev]"
    longdesc = (
        "Start a minkms node on VOLUME (which holds kms.db). The HSM key comes from "
        "MINIO_KMS_HSM_KEY. Each node starts as a single-node cluster; join nodes "
        "with 'minkms add HOST:PORT'."
    )
    optParameters = [
        ["host", None, None, "This node's public HOST[:PORT]; must match 'minkms add'."],
        ["address", None, cfg.DEFAULT_ADDRESS, "The IP:PORT to listen on."],
        ["config", None, None, "The config.yaml file (TLS certificates)."],
        ["log-format", None, "text", "Server log lines as 'text' or 'json'."],
    ]
    optFlags = [
        ["dev", None, "Development mode: self-signed certificate, random HSM key, temporary volume."],
    ]

    def parseOptions(self, options=None):
        """
        Accept options after the volume, as the guide and the systemd unit
        write them (C{server VOLUME --host ...}): move every option before
        the positional arguments, then parse as usual.
        """
        if options is None:
            options = sys.argv[1:]
        super().parseOptions(_options_first(list(options), {p[0] for p in self.optParameters}))

    def parseArgs(self, volume=None):
        self["volume"] = volume

    def postOptions(self):
        if not self["dev"] and not self["volume"]:
            raise usage.UsageError("missing VOLUME: the directory that holds kms.db")


def _options_first(argv: list[str], takes_value: set[str]) -> list[str]:
    options, positional = [], []
    while argv:
        arg = argv.pop(0)
        if arg == "--":
            positional.extend(argv)
            break
        if arg.startswith("-") and arg != "-":
            options.append(arg)
            if arg.startswith("--") and "=" not in arg and arg[2:] in takes_value and argv:
                options.append(argv.pop(0))
        else:
            positional.append(arg)
    return options + positional


@attrs.frozen
class Settings:
    """Everything a node needs, resolved and checked."""

    hsm: SoftHSM
    credentials: list
    ca_certificates: list
    volume: str
    temporary_volume: bool
    host: str
    listen_ip: str
    listen_port: int
    sysadmin: str
    sysadmin_api_key: str | None
    heartbeat: float
    election_timeout: float
    snapshot_entries: int
    dev: bool
    read_lease: float = cfg.DEFAULT_READ_LEASE
    reads_without_leader: str = cfg.DEFAULT_READS_WITHOUT_LEADER
    limits: ConnectionLimits = ConnectionLimits()
    config: str | None = None


def _default_host_ip() -> str:
    try:
        ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return ip or "127.0.0.1"


def resolve(options, environ=os.environ) -> Settings:
    """Check the options, environment and config file; load keys and certs."""
    listen_ip, listen_port = cfg.split_host_port(options["address"], "--address")
    if listen_ip in ("", "*"):
        listen_ip = "0.0.0.0"
    if options["host"]:
        host_name, host_port = cfg.split_host_port(options["host"], "--host", listen_port)
    else:
        host_name = "127.0.0.1" if options["dev"] else _default_host_ip()
        if listen_ip not in ("0.0.0.0", "::"):
            host_name = listen_ip
        host_port = listen_port
    host = cfg.join_host_port(host_name, host_port)
    if options["dev"]:
        hsm = SoftHSM.generate() if not _has_hsm_env(environ) else cfg.hsm_from_environment(environ)
    else:
        hsm = cfg.hsm_from_environment(environ)
    heartbeat, election = cfg.DEFAULT_HEARTBEAT, cfg.DEFAULT_ELECTION_TIMEOUT
    snapshot_entries = cfg.DEFAULT_SNAPSHOT_ENTRIES
    read_lease, reads = cfg.DEFAULT_READ_LEASE, cfg.DEFAULT_READS_WITHOUT_LEADER
    admin = None
    limits = ConnectionLimits()
    if options["config"]:
        file_config = cfg.load_config(options["config"])
        credentials, cas = file_config.credentials, file_config.ca_certificates
        limits = file_config.limits
        heartbeat, election = file_config.heartbeat, file_config.election_timeout
        snapshot_entries = file_config.snapshot_entries
        read_lease, reads = file_config.read_lease, file_config.reads_without_leader
        admin = file_config.admin_identity
    elif options["dev"]:
        credentials, cas = [dev_credentials(host_name)], []
    else:
        raise StartupError("no TLS configuration: pass --config FILE with tls.certs (or use --dev)")
    temporary = False
    volume = options["volume"]
    if not volume:
        volume = tempfile.mkdtemp(prefix="minkms-dev-")
        temporary = True
    sysadmin_key = hsm.sysadmin_api_key()
    sysadmin = admin or APIKey.parse(sysadmin_key).identity
    return Settings(
        hsm=hsm,
        credentials=credentials,
        ca_certificates=cas,
        volume=os.path.abspath(volume),
        temporary_volume=temporary,
        host=host,
        listen_ip=listen_ip,
        listen_port=listen_port,
        sysadmin=sysadmin,
        sysadmin_api_key=None if admin else sysadmin_key,
        heartbeat=heartbeat,
        election_timeout=election,
        snapshot_entries=snapshot_entries,
        read_lease=read_lease,
        reads_without_leader=reads,
        dev=options["dev"],
        limits=limits,
        config=options["config"],
    )


def _has_hsm_env(environ) -> bool:
    return any(environ.get(n) for n in cfg.HSM_ENV)


def dev_credentials(host_name: str):
    """A fresh self-signed server certificate for C{--dev}."""
    import ipaddress

    from cryptography.hazmat.primitives.asymmetric import ec

    from minkms.apikey import self_signed_certificate
    from minkms.tls import ServerCredentials

    key = ec.generate_private_key(ec.SECP256R1())
    dns, ips = ["localhost"], [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    try:
        ip = ipaddress.ip_address(host_name)
        if ip not in ips:
            ips.append(ip)
    except ValueError:
        if host_name not in dns:
            dns.append(host_name)
    cert = self_signed_certificate(
        key, host_name, client=False, dns_names=tuple(dns), ip_addresses=tuple(ips), days=365
    )
    return ServerCredentials([cert], key)


class NodeService(service.MultiService):
    """
    A running node, as C{twistd} and C{minkms server} run it: a
    L{MultiService} whose children are the node (its ticks and peer links
    run on the reactor it was given), the operations side (audit, log
    stream, metric polls) and the TLS listener (a
    L{StreamServerEndpointService}), started in that order and stopped in
    reverse, one after the other.  It prints the banner once started and, in
    C{--dev}, removes the temporary volume once stopped.

    The listener binds its port in L{privilegedStartService}, before the
    reactor runs; a port it cannot have ends start-up with one line.
    """

    stop_reactor_on_failure = True

    def __init__(self, settings: Settings, node, ops, listener, out, reactor) -> None:
        super().__init__()
        self.ops = ops
        self.settings = settings
        self.node = node
        self.listener = listener
        self._out = out
        self._reactor = reactor
        Part("node", node.start, node.stop).setServiceParent(self)
        Part("operations", ops.start, ops.stop).setServiceParent(self)
        listener.setName("listener")
        listener.setServiceParent(self)

    def _fatal(self, reason: str) -> None:
        if self.stop_reactor_on_failure and self._reactor.running:
            self._reactor.stop()

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except ierror.CannotListenError as e:
            self.node.close()
            if self.settings.temporary_volume:
                shutil.rmtree(self.settings.volume, ignore_errors=True)
            reason = e.socketError.strerror if getattr(e.socketError, "strerror", None) else str(e.socketError)
            s = self.settings
            raise SystemExit(
                f"minkms: error: cannot listen on {cfg.join_host_port(s.listen_ip, s.listen_port)}: {reason.lower()}"
            ) from None

    def startService(self):
        self.node.fatal_hook = self._fatal
        super().startService()
        s = self.settings
        text = banner(
            s.hsm.name,
            self.node.cluster_id,
            self.node.members(),
            self.node.node_id,
            f"https://{s.host}",
            s.sysadmin_api_key,
        )
        self._out.write(text + "\n")
        self._out.flush()

    async def _stop(self):
        for child in reversed(list(self)):
            await child.stopService()
        if self.settings.temporary_volume:
            await threads.deferToThread(shutil.rmtree, self.settings.volume, ignore_errors=True)

    def stopService(self):
        service.Service.stopService(self)
        return defer.ensureDeferred(self._stop())


class Part(service.Service):
    """One part of a node as a child service: C{start()} and C{stop()} (which may wait)."""

    def __init__(self, name: str, start, stop) -> None:
        self.setName(name)
        self._start = start
        self._stop = stop

    def startService(self):
        super().startService()
        self._start()

    def stopService(self):
        super().stopService()
        return defer.maybeDeferred(self._stop)


def build_service(settings: Settings, reactor, out=None, storage_runner=None) -> NodeService:
    """
    Open the volume and build the node, the operations side and the
    listener (which binds its port when the service starts).  The node and
    every timer run on C{reactor}; C{storage_runner} runs the volume's
    blocking calls (its own thread by default).
    """
    from minkms.server.node import open_node

    node = open_node(settings, reactor, storage_runner)
    try:
        ops = Operations(settings, node, reactor, settings.config)
        resources = {**node.extra_resources(), **ops.resources()}
        limits = limits_within_descriptors(settings.limits)
        site = APISite(ops.observed(build_root(node, settings.sysadmin, resources)), limits)
        peer_identity = APIKey.parse(settings.hsm.peer_api_key()).identity
        factory = ops.switch_factory(
            site, node.peer_protocol, limits=limits, privileged={peer_identity, settings.sysadmin}, clock=reactor
        )
        factory.noisy = False
        context_factory = ServerContextFactory(settings.credentials, peer.peer_credentials(settings.hsm))
        ops.watch_certificates(context_factory)
        endpoint = TCP4ServerEndpoint(
            reactor, settings.listen_port, backlog=limits.listen_backlog, interface=settings.listen_ip
        )
        listener = StreamServerEndpointService(endpoint, PromptTLSFactory(context_factory, False, factory, node.sends))
        # As Twisted's strports.service() does: a port that cannot be had
        # fails privilegedStartService at once, not in a log line later.
        listener._raiseSynchronously = True
    except BaseException:
        node.close()
        raise
    return NodeService(settings, node, ops, listener, out or sys.stdout, reactor)


def limits_within_descriptors(limits: ConnectionLimits) -> ConnectionLimits:
    """
    Raise the soft limit of open files towards the hard one as far as the
    connection caps need (as Go programs do at start), and lower the caps
    to what the descriptors then allow (L{fit_to_descriptors}).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + limits.reserved_connections + DESCRIPTOR_MARGIN
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return limits
    fitted = fit_to_descriptors(limits, soft)
    if fitted != limits:
        log.warn(
            "only {soft} open files allowed: connections capped at {total} "
            "(reserve {reserved}); raise LimitNOFILE to allow limits.max_connections",
            soft=soft,
            total=fitted.max_connections,
            reserved=fitted.reserved_connections,
        )
    return fitted


def disable_core_dumps() -> None:
    """
    A core dump of a node would hold the HSM key and every key in memory:
    the process allows none (as the systemd unit's C{LimitCORE=0} does).
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def makeService(options, reactor=None, environ=os.environ, out=None):
    """
    The L{IServiceMaker} entry point.  Start-up problems exit with one line.
    """
    if reactor is None:
        from twisted.internet import reactor
    disable_core_dumps()
    tune_collector()
    try:
        settings = resolve(options, environ)
    except StartupError as e:
        raise SystemExit(f"minkms: error: {e}") from None
    try:
        return build_service(settings, reactor, out)
    except BaseException as e:
        if settings.temporary_volume:
            shutil.rmtree(settings.volume, ignore_errors=True)
        if isinstance(e, StartupError):
            raise SystemExit(f"minkms: error: {e}") from None
        raise
