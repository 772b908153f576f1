"""
The node's service as C{twistd} and C{minkms server} run it, in memory: a
L{MultiService} whose listener is an endpoint service bound in
C{privilegedStartService}, whose children start and stop with it, and
whose timers all run on the reactor it was given (a L{MemoryReactorClock}
here, so no test waits on real time).
"""

import errno
import subprocess
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import error
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from minkms.hsm import SoftHSM
from minkms.server import collector, service
from minkms.server.prompttls import PromptTLSFactory
from minkms.storage.volume import InlineRunner
from tests.harness import NullOut

HOST = "127.0.0.1:7373"


class BusyPortReactor(MemoryReactorClock):
    """A memory reactor whose every port is taken."""

    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise error.CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))


class NodeServiceTests(unittest.TestCase):
    def setUp(self):
        self.hsm = SoftHSM.generate()
        self.volume = self.mktemp()

    def build(self, reactor):
        """The node's service on C{reactor}, storage calls run inline."""
        options = service.Options()
        options.parseOptions([self.volume, "--dev", "--host", HOST, "--address", HOST])
        settings = service.resolve(options, environ={"MINIO_KMS_HSM_KEY": self.hsm.to_text()})
        self.out = NullOut()
        node_service = service.build_service(settings, reactor, self.out, storage_runner=InlineRunner())
        node_service.stop_reactor_on_failure = False
        return node_service

    def started(self, reactor):
        node_service = self.build(reactor)
        node_service.privilegedStartService()
        node_service.startService()
        self.addCleanup(lambda: node_service.running and node_service.stopService())
        return node_service

    def test_listener_is_an_endpoint_service_bound_before_start(self):
        reactor = MemoryReactorClock()
        node_service = self.build(reactor)
        self.assertEqual([child.name for child in node_service], ["node", "operations", "listener"])
        self.assertIsInstance(node_service.getServiceNamed("listener"), StreamServerEndpointService)
        self.assertEqual(reactor.tcpServers, [], "nothing is bound by makeService")
        node_service.privilegedStartService()
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((interface, port), ("127.0.0.1", 7373))
        self.assertIsInstance(factory, PromptTLSFactory, "the port speaks TLS only")
        self.assertFalse(node_service.node.ready(True), "the node does not run before startService")
        self.addCleanup(node_service.node.close)

    def test_start_runs_the_children_and_prints_the_banner(self):
        node_service = self.started(MemoryReactorClock())
        self.assertTrue(all(child.running for child in node_service))
        self.assertIn(f"https://{HOST}", self.out.text)

    def test_node_ticks_on_the_given_clock(self):
        reactor = MemoryReactorClock()
        node_service = self.started(reactor)
        node = node_service.node
        elected = node.when(lambda: node.ready(True))
        self.assertNoResult(elected)
        reactor.pump([node_service.settings.heartbeat] * 100)
        self.assertTrue(self.successResultOf(elected), "a single node elects itself as its clock advances")

    def test_stop_stops_every_child_and_timer(self):
        reactor = MemoryReactorClock()
        node_service = self.started(reactor)
        self.assertNotEqual(reactor.getDelayedCalls(), [])
        d = node_service.stopService()
        self.assertEqual(self.successResultOf(d), None)
        self.assertFalse(any(child.running for child in node_service))
        self.assertEqual(reactor.getDelayedCalls(), [], "no timer of the node is left")
        again = self.started(MemoryReactorClock())
        self.assertTrue(again.running, "the volume was released")

    def test_make_service_tunes_the_collector(self):
        """A process that makes the node's service (C{twistd minkms}, C{minkms server}) runs the tuned collector."""
        code = (
            "import gc, os, sys\n"
            "from minkms.server import service\n"
            "options = service.Options()\n"
            "options.parseOptions([sys.argv[1], '--dev', '--host', sys.argv[2], '--address', sys.argv[2]])\n"
            "service.makeService(options, environ={'MINIO_KMS_HSM_KEY': sys.argv[3]})\n"
            "print(gc.get_threshold(), flush=True)\n"
            "os._exit(0)\n"
        )
        shown = subprocess.run(
            [sys.executable, "-c", code, self.volume, HOST, self.hsm.to_text()],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        self.assertEqual(shown.strip(), str(collector.THRESHOLDS))

    def test_busy_port_is_one_line_and_releases_the_volume(self):
        node_service = self.build(BusyPortReactor())
        with self.assertRaises(SystemExit) as e:
            node_service.privilegedStartService()
        self.assertEqual(str(e.exception), f"minkms: error: cannot listen on {HOST}: address already in use")
        self.started(MemoryReactorClock())
