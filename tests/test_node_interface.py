"""
L{minkms.server.interfaces.INode}: what the API uses of a node, and that
the real node provides it.
"""

import ast
import pathlib

from twisted.trial import unittest
from zope.interface.verify import verifyObject

import minkms.server
from minkms.server.interfaces import INode
from tests.harness import InProcessServer

API_MODULES = ("api.py", "dbresource.py")


def _node_uses() -> set[str]:
    """The names the API's resources read off a node (C{node.X}, C{self._node.X})."""
    package = pathlib.Path(minkms.server.__file__).parent
    used = set()
    for module in API_MODULES:
        for node in ast.walk(ast.parse((package / module).read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id == "node":
                used.add(node.attr)
            elif isinstance(owner, ast.Attribute) and owner.attr == "_node":
                used.add(node.attr)
    return used


class NodeInterfaceTests(unittest.TestCase):
    def test_declares_what_the_api_uses(self):
        """INode names exactly the attributes and methods the API's resources use."""
        self.assertEqual(set(INode.names()), _node_uses())

    def test_node_provides_it(self):
        """A running node provides INode, methods with the declared signatures."""
        server = InProcessServer(self)
        self.assertTrue(verifyObject(INode, server.node))
