"""
The borders between packages, checked on the source: the KMS semantics
(L{minkms.kms}) are pure, the server never imports the CLI, and no module
uses another module's private (C{_name}) names.
"""

import ast
import functools
import pathlib
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import minkms

REPO = pathlib.Path(minkms.__file__).parent.parent

PRIVATE_USES_LEFT = {
    # Mutation tests break a private step on purpose, to show a checker catches it.
    ("tests/faults/mutations.py", "volume.Volume._write_batch"),
    ("tests/test_sim_mutations.py", "core.RaftCore._maybe_commit"),
    # In other engineers' files this session; see the report of issue 12.
    ("minkms/server/peer.py", "amp._wireNameToPythonIdentifier"),
}
"""
Private names still used from outside their module: C{(file, use)}.  A
new use fails L{LayoutTests.test_no_private_names_across_modules}.
"""


def _sources(*directories):
    for directory in directories:
        yield from _parsed(directory)


@functools.cache
def _parsed(directory: str) -> tuple:
    """C{(file, tree)} of every Python file under C{directory}, parsed once per run."""
    return tuple(
        (path.relative_to(REPO).as_posix(), ast.parse(path.read_text(), str(path)))
        for path in sorted((REPO / directory).rglob("*.py"))
        if path.name != "kms_pb2.py"
    )


def _imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(name: str, tree) -> set:
    """
    C{(file, use)} for each C{from M import _x} and each C{m._x} where C{m}
    is a module (or a class of one) this file imported.
    """
    uses = set()
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if _private(alias.name):
                    uses.add((name, f"{node.module}.{alias.name}"))
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imported[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in imported:
                uses.add((name, f"{ast.unparse(node.value)}.{node.attr}"))
    return uses


class LayoutTests(SynchronousTestCase):
    def test_kms_is_pure(self):
        """Importing minkms.kms loads no Twisted and nothing of the server, CLI, storage or driver."""
        script = (
            "import sys, minkms.kms\n"
            "print(' '.join(m for m in sys.modules if m.split('.')[0] == 'twisted'"
            " or m.startswith(('minkms.server', 'minkms.cli', 'minkms.storage', 'minkms.driver'))))"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout.split()
        self.assertEqual(loaded, [])

    def test_server_never_imports_cli(self):
        """The CLI runs servers (minkms server, cluster --dev); the server knows nothing of it."""
        for name, tree in _sources("minkms"):
            if not name.startswith("minkms/server/"):
                continue
            for module in _imported_modules(tree):
                self.assertFalse(module.split(".")[:2] == ["minkms", "cli"], f"{name} imports {module}")

    def test_no_private_names_across_modules(self):
        """No module uses another module's private names, beyond L{PRIVATE_USES_LEFT}."""
        found = set()
        for name, tree in _sources("minkms", "tests", "bench", "twisted"):
            found |= private_uses(name, tree)
        self.assertEqual(found - PRIVATE_USES_LEFT, set())

    def test_private_name_check_finds_both_forms(self):
        """The check above sees C{from m import _x} and C{m._x}, not C{self._x}."""
        tree = ast.parse("from a.b import _x\nimport c\nc.d._y\nself._z\n")
        self.assertEqual(private_uses("f", tree), {("f", "a.b._x"), ("f", "c.d._y")})


class PackagingTests(SynchronousTestCase):
    """What C{pip install .} (not editable) puts on a server."""

    def test_every_package_is_installed(self):
        """Each package under minkms/ is listed in setup.cfg, or a plain install would lack it."""
        import configparser

        config = configparser.ConfigParser()
        config.read(REPO / "setup.cfg")
        listed = set(config["options"]["packages"].split())
        found = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "minkms").rglob("__init__.py")}
        self.assertEqual(found - listed, set())
