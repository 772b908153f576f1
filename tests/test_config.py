"""config.yaml, HSM environment and address parsing: each problem is one clear line."""

import os

from twisted.trial import unittest

from minkms.errors import StartupError
from minkms.hsm import SoftHSM
from minkms.server import config as cfg
from minkms.server.limits import DESCRIPTOR_MARGIN, ConnectionLimits, fit_to_descriptors
from tests.support import write_server_certificate


class ConfigFileTests(unittest.TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.key, self.cert = write_server_certificate(self.dir)
        self.cas = os.path.join(self.dir, "CAs")
        os.makedirs(self.cas)

    def write(self, text):
        path = os.path.join(self.dir, "config.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def assertOneLine(self, path, fragment):
        with self.assertRaises(StartupError) as e:
            cfg.load_config(path)
        message = str(e.exception)
        self.assertIn(fragment, message)
        self.assertNotIn("\n", message)

    def test_guide_layout(self):
        """The guide's config (ca beside certs) loads."""
        path = self.write(
            f"version: v1\ntls:\n  certs:\n  - key: {self.key}\n    cert: {self.cert}\n  ca: {self.cas}\n"
        )
        loaded = cfg.load_config(path)
        self.assertEqual(len(loaded.credentials), 1)
        self.assertEqual(loaded.heartbeat, cfg.DEFAULT_HEARTBEAT)

    def test_ca_inside_certs_item(self):
        """The flattened reading of the guide (ca inside a certs item) loads too."""
        path = self.write(
            f"version: v1\ntls:\n  certs:\n  - key: {self.key}\n    cert: {self.cert}\n    ca: {self.cas}\n"
        )
        self.assertEqual(len(cfg.load_config(path).credentials), 1)

    def test_cluster_timing(self):
        path = self.write(
            f"version: v1\ntls:\n  certs:\n  - key: {self.key}\n    cert: {self.cert}\n"
            "cluster:\n  heartbeat: 100ms\n  election_timeout: 1.5s\n"
        )
        loaded = cfg.load_config(path)
        self.assertEqual((loaded.heartbeat, loaded.election_timeout), (0.1, 1.5))

    def test_errors(self):
        """Each bad config names its problem in one line."""
        good = f"  certs:\n  - key: {self.key}\n    cert: {self.cert}\n"
        self.assertOneLine(os.path.join(self.dir, "missing.yaml"), "cannot read config")
        self.assertOneLine(self.write("version: v1\ntls: [unclosed\n"), "not valid YAML")
        self.assertOneLine(self.write("version: v2\ntls:\n" + good), "unsupported version 'v2'")
        self.assertOneLine(self.write("- a list\n"), "expected a YAML mapping")
        self.assertOneLine(self.write("version: v1\n"), "tls.certs")
        self.assertOneLine(
            self.write(f"version: v1\ntls:\n  certs:\n  - key: /no/key\n    cert: {self.cert}\n"),
            "cannot read private key /no/key",
        )
        self.assertOneLine(
            self.write(f"version: v1\ntls:\n  certs:\n  - key: {self.key}\n    cert: /no/cert\n"),
            "cannot read certificate /no/cert",
        )
        self.assertOneLine(
            self.write(f"version: v1\ntls:\n  certs:\n  - key: {self.cert}\n    cert: {self.cert}\n"),
            "invalid private key",
        )
        self.assertOneLine(
            self.write("version: v1\ntls:\n" + good + "  ca: /no/CAs\n"), "cannot read CA directory /no/CAs"
        )
        other_key, _ = write_server_certificate(self.cas)
        os.remove(os.path.join(self.cas, "public.crt"))
        self.assertOneLine(
            self.write(f"version: v1\ntls:\n  certs:\n  - key: {other_key}\n    cert: {self.cert}\n"), "does not match"
        )
        self.assertOneLine(
            self.write("version: v1\ntls:\n" + good + "cluster:\n  heartbeat: soon\n"), "invalid cluster.heartbeat"
        )
        for limits, fragment in (
            ("  handshake_timeout: soon\n", "invalid limits.handshake_timeout 'soon'"),
            ("  body_timeout: 0\n", "invalid limits.body_timeout 0: must be positive"),
            ("  max_connections: 0\n", "limits.max_connections must be an integer of at least 1"),
            ("  reserved_connections: -1\n", "limits.reserved_connections must be an integer of at least 0"),
            ("  listen_backlog: many\n", "limits.listen_backlog must be an integer"),
            ("  max_conections: 10\n", "unknown setting limits.max_conections"),
        ):
            self.assertOneLine(self.write("version: v1\ntls:\n" + good + "limits:\n" + limits), fragment)

    def test_limits(self):
        """The limits: section; what it leaves out keeps its default."""
        path = self.write(
            f"version: v1\ntls:\n  certs:\n  - key: {self.key}\n    cert: {self.cert}\n"
            "limits:\n  handshake_timeout: 2s\n  body_timeout: 1m\n"
            "  max_connections_per_address: 10\n  reserved_connections: 0\n"
        )
        limits = cfg.load_config(path).limits
        self.assertEqual(
            limits,
            ConnectionLimits(
                handshake_timeout=2.0, body_timeout=60.0, max_connections_per_address=10, reserved_connections=0
            ),
        )
        self.assertEqual((limits.request_timeout, limits.max_connections, limits.listen_backlog), (10.0, 4096, 1024))


class DescriptorFitTests(unittest.TestCase):
    """The caps and the reserve never add up to more descriptors than the process may open."""

    def test_fits(self):
        fitted = fit_to_descriptors(ConnectionLimits(), 512)
        self.assertEqual(
            (fitted.max_connections, fitted.reserved_connections, fitted.max_connections_per_address), (392, 56, 392)
        )
        self.assertLessEqual(fitted.max_connections + fitted.reserved_connections, 512 - DESCRIPTOR_MARGIN)

    def test_enough_descriptors(self):
        self.assertEqual(fit_to_descriptors(ConnectionLimits(), 65536), ConnectionLimits())


class EnvironmentTests(unittest.TestCase):
    def test_hsm_key_spellings(self):
        """Both MINIO_KMS_HSM_KEY and the docs' MINIO_HSM_KMS_KEY are read."""
        key = SoftHSM.generate().to_text()
        for name in cfg.HSM_ENV:
            self.assertEqual(cfg.hsm_from_environment({name: key}).to_text(), key)

    def test_hsm_key_errors(self):
        with self.assertRaises(StartupError) as e:
            cfg.hsm_from_environment({})
        self.assertIn("no HSM key", str(e.exception))
        with self.assertRaises(StartupError) as e:
            cfg.hsm_from_environment({"MINIO_KMS_HSM_KEY": "hsm:aes256:AAAA"})
        self.assertIn("invalid HSM key", str(e.exception))

    def test_host_port(self):
        self.assertEqual(cfg.split_host_port("node0.example.net", "--host"), ("node0.example.net", 7373))
        self.assertEqual(cfg.split_host_port("https://10.0.0.2:7400", "--host"), ("10.0.0.2", 7400))
        self.assertEqual(cfg.split_host_port("[::1]:7373", "--host"), ("::1", 7373))
        self.assertEqual(cfg.join_host_port("::1", 7373), "[::1]:7373")
        self.assertRaises(StartupError, cfg.split_host_port, "host:99999", "--host")
        self.assertRaises(StartupError, cfg.split_host_port, "", "--host")
