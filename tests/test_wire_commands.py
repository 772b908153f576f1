"""
The command table (L{minkms.wire.commands}) and the responders that
register on its rows: every command is answered in exactly one place, the
place its row names.
"""

from twisted.trial.unittest import SynchronousTestCase

from minkms.kms.answers import answers
from minkms.kms.proposals import proposals
from minkms.server.membership import node_commands
from minkms.wire import commands
from minkms.wire.commands import BY_CODE, COMMANDS, KEY_STATUS, READ, WRITE, Responders

REGISTRIES = {"answers": answers, "proposals": proposals, "node_commands": node_commands}


class TableTests(SynchronousTestCase):
    def test_one_responder_per_row(self):
        """Each row is answered by exactly one registry, with the function the row names."""
        for command in COMMANDS:
            found = {name: r.get(command.code) for name, r in REGISTRIES.items() if r.get(command.code)}
            self.assertEqual(len(found), 1, command.name)
            (function,) = found.values()
            self.assertEqual(f"{function.__module__}.{function.__qualname__}", command.handler)

    def test_kinds_match_registries(self):
        """Reads are answered from the state, writes proposed to it; the node runs the cluster rows."""
        for command in COMMANDS:
            if answers.get(command.code):
                self.assertEqual(command.kind, READ, command.name)
            if proposals.get(command.code):
                self.assertEqual(command.kind, WRITE, command.name)
            if node_commands.get(command.code):
                self.assertEqual(command.scope, commands.SCOPE_CLUSTER, command.name)

    def test_named_constants(self):
        """Every row's code has its constant, named after the row's name."""
        for command in COMMANDS:
            constant = command.name.replace(":", "_")
            self.assertEqual(getattr(commands, constant), command.code)
        self.assertEqual(len(BY_CODE), len(COMMANDS))

    def test_argument_fields_exist(self):
        """The field a row's authorization judges is a field of its request."""
        for command in COMMANDS:
            if command.argument:
                self.assertIn(command.argument, command.request.DESCRIPTOR.fields_by_name, command.name)

    def test_registry_refuses_a_function_the_row_does_not_name(self):
        registry = Responders()

        def key_status(state, ctx, request, visible):
            pass

        error = self.assertRaises(ValueError, registry.responder(KEY_STATUS), key_status)
        self.assertIn("KEY:STATUS is answered by minkms.kms.answers.key_status", str(error))
        self.assertIsNone(registry.get(KEY_STATUS))

    def test_registry_refuses_a_second_responder(self):
        self.assertRaises(ValueError, answers.responder(KEY_STATUS), answers.get(KEY_STATUS))
