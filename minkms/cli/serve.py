"""
C{minkms server}: parse the same options as C{twistd minkms}, build the
same service, and run it in the foreground with logs on stderr.
"""

from twisted.python import usage

from minkms import version
from minkms.cli.output import CLIError
from minkms.server.logstream import start_logging
from minkms.server.service import Options, makeService


class ServerOptions(Options):
    """C{Options} as C{minkms server} presents them (its usage line, the minkms version)."""

    synopsis = "Usage: minkms server VOLUME [options]"

    def opt_version(self):
        """Display the minkms version and exit."""
        print(f"minkms version {version.VERSION} (commit={version.COMMIT})")
        raise SystemExit(0)


def run_server(argv: list[str], reactor=None) -> int:
    """Run a node until SIGINT/SIGTERM; return the exit status."""
    options = ServerOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        raise CLIError(f"server: {e}") from None
    if options["log-format"] not in ("text", "json"):
        raise CLIError("server: --log-format must be 'text' or 'json'")
    if reactor is None:
        from twisted.internet import reactor
    node_service = makeService(options, reactor=reactor)
    node_service.privilegedStartService()
    start_logging(as_json=options["log-format"] == "json")
    reactor.callWhenRunning(node_service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", node_service.stopService)
    reactor.run()
    status = getattr(node_service.node, "exit_status", 0)
    refusal = node_service.node.standing.refusal
    if status and refusal:
        raise CLIError(refusal)
    return status
