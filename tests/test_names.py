"""
Our rules for enclave, key and policy names and for identity tags.
"""

from twisted.trial.unittest import SynchronousTestCase

from minkms.errors import KMSError
from minkms.names import name_problem, validate_name, validate_tags


class NameTests(SynchronousTestCase):
    """validate_name."""

    def assertInvalid(self, kind, name, why):
        """validate_name raises the 400 with reason C{why}."""
        error = self.assertRaises(KMSError, validate_name, kind, name)
        self.assertEqual(error, KMSError(400, f"invalid {kind} name: {why}"))

    def test_valid(self):
        """Names used by MinIO, the spec and the vectors, and the limits."""
        for name in (
            "my-key",
            "minio-default-key",
            "tenant-a",
            "my_key.v2",
            "a",
            "x" * 80,
            "KEY:1",
            "ключ",
            "...",
            ".hidden",
            "a?b[c]",
            "%2F",
        ):
            for kind in ("enclave", "key", "policy"):
                self.assertIsNone(validate_name(kind, name))

    def test_empty(self):
        """Empty names are refused."""
        self.assertInvalid("key", "", "empty")

    def test_too_long(self):
        """81 characters are too many."""
        self.assertInvalid("enclave", "x" * 81, "longer than 80 characters")

    def test_reserved(self):
        """'.' and '..' are refused."""
        self.assertInvalid("policy", ".", "'.' is reserved")
        self.assertInvalid("key", "..", "'..' is reserved")

    def test_forbidden_characters(self):
        """Slashes, backslashes and the policy wildcard."""
        self.assertInvalid("enclave", "a/b", "contains '/' at position 2")
        self.assertInvalid("key", "a\\b", "contains '\\' at position 2")
        self.assertInvalid("key", "key*", "contains '*' at position 4")

    def test_control_and_space(self):
        """Control, format and whitespace characters."""
        self.assertInvalid("key", "a\nb", "contains U+000A at position 2")
        self.assertInvalid("key", "\x7f", "contains U+007F at position 1")
        self.assertInvalid("key", "my key", "contains U+0020 at position 3")
        self.assertInvalid("key", "a\u200bb", "contains U+200B at position 2")
        self.assertInvalid("key", "a\u00a0", "contains U+00A0 at position 2")

    def test_every_ascii_character(self):
        """
        Each ASCII character is judged by the category rule, under both
        strengths (printable ASCII names skip the per-character walk).
        """
        for strict in (True, False):
            for code in range(128):
                char = chr(code)
                refused = char in "/\\*" or (code < 32 or code == 127 or (strict and char == " "))
                problem = name_problem(f"a{char}b", strict)
                self.assertEqual(problem is not None, refused, (strict, char))

    def test_unknown_kind(self):
        """A kind other than enclave, key or policy is a bug."""
        self.assertRaises(ValueError, validate_name, "identity", "x")


class TagTests(SynchronousTestCase):
    """validate_tags (spec 5.6 limits)."""

    def assertInvalid(self, tags, why):
        """validate_tags raises the 400 with reason C{why}."""
        error = self.assertRaises(KMSError, validate_tags, tags)
        self.assertEqual(error, KMSError(400, f"invalid identity tags: {why}"))

    def test_valid(self):
        """The vectors' tags, no tags, and the limits."""
        validate_tags({})
        validate_tags({"env": "prod", "owner": "alice", "team": "storage", "ticket": "OPS-42"})
        validate_tags({f"k{i}": "" for i in range(32)})
        validate_tags({"k" * 64: "v/._-" * 51})

    def test_too_many(self):
        """33 tags."""
        self.assertInvalid({f"k{i}": "v" for i in range(33)}, "more than 32 tags")

    def test_key_length(self):
        """Empty or 65-character keys."""
        self.assertInvalid({"": "v"}, "tag key must be 1 to 64 characters")
        self.assertInvalid({"k" * 65: "v"}, "tag key must be 1 to 64 characters")

    def test_value_length(self):
        """257-character values."""
        self.assertInvalid({"k": "v" * 257}, "value of tag 'k' is longer than 256 characters")

    def test_charset(self):
        """Only [A-Za-z0-9._/-]."""
        self.assertInvalid({"a b": "v"}, "tag key 'a b' has characters outside [A-Za-z0-9._/-]")
        self.assertInvalid({"k": "v\n"}, "value of tag 'k' has characters outside [A-Za-z0-9._/-]")
