"""
Tests for L{minkms.state.arguments}: the apply-time name rules agree with the
wire rules wherever they do not depend on the Unicode database.
"""

from twisted.trial import unittest

from minkms import names as strict_names
from minkms.errors import KMSError
from minkms.state import arguments
from tests.test_state_fixtures import ident


def outcome(check, *args):
    try:
        check(*args)
    except KMSError as e:
        return e
    return None


class AgreementTests(unittest.TestCase):
    def test_names(self):
        samples = [
            "",
            "a",
            "my-key",
            "minio-default-key",
            "x" * 80,
            "x" * 81,
            ".",
            "..",
            "...",
            "a/b",
            "a\\b",
            "k*",
            "\x00",
            "a\x1fb",
            "a\x7f",
            "a\x85",
            "caf\u00e9",
            "\u00e9t\u00e9/",
            "*/",
            "a/\x00",
        ]
        for kind in ("enclave", "key", "policy"):
            for name in samples:
                self.assertEqual(
                    outcome(arguments.check_name, kind, name),
                    outcome(strict_names.validate_name, kind, name),
                    (kind, name),
                )

    def test_stable_subset_only(self):
        # Separators and format characters are the proposer's business.
        self.assertIsNone(outcome(arguments.check_name, "key", "a b"))
        self.assertIsNotNone(outcome(strict_names.validate_name, "key", "a b"))

    def test_tags(self):
        samples = [
            {},
            {"a": "b"},
            {"": "v"},
            {"k" * 64: "v" * 256},
            {"k" * 65: "v"},
            {"k": "v" * 257},
            {"k y": "v"},
            {"k": "v!"},
            {f"k{i}": "" for i in range(32)},
            {f"k{i}": "" for i in range(33)},
            {"k\n": "v"},
            {"k": "v\n"},
        ]
        for tags in samples:
            self.assertEqual(outcome(arguments.check_tags, tags), outcome(strict_names.validate_tags, tags), tags)


class IdentityTests(unittest.TestCase):
    def test_check_identity(self):
        arguments.check_identity(ident("x"))
        self.assertEqual(outcome(arguments.check_identity, ""), KMSError(400, "invalid identity: empty"))
        self.assertEqual(outcome(arguments.check_identity, "k1:abc").status, 400)
