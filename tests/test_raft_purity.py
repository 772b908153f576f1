"""
The Raft core must stay pure: no Twisted, no I/O, no clock, no sockets and
no randomness other than the injected C{random.Random}.
"""

import ast
import pathlib

from twisted.trial.unittest import SynchronousTestCase

import minkms.raft

FORBIDDEN = {
    "twisted",
    "time",
    "socket",
    "os",
    "asyncio",
    "threading",
    "select",
    "datetime",
    "io",
    "secrets",
}


def _raft_modules():
    package = pathlib.Path(minkms.raft.__file__).parent
    return sorted(package.glob("*.py"))


class PurityTests(SynchronousTestCase):
    """Static checks over minkms/raft/*.py."""

    def test_no_forbidden_imports(self):
        """No module under minkms/raft imports Twisted or an I/O, clock or thread module."""
        modules = _raft_modules()
        self.assertGreater(len(modules), 5)
        for path in modules:
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    self.assertNotIn(name.split(".")[0], FORBIDDEN, f"{path.name} imports {name}")

    def test_randomness_is_injected(self):
        """The random module is only named as the type of the injected generator."""
        for path in _raft_modules():
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "random":
                    self.assertEqual(node.attr, "Random", f"{path.name} uses random.{node.attr}")
                if isinstance(node, ast.ImportFrom) and node.module == "random":
                    self.fail(f"{path.name} imports from random")
