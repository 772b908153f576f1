"""Tests for L{minkms.state.policy}: patterns, documents, protobuf forms."""

import json

from twisted.trial import unittest

from minkms.errors import KMSError
from minkms.names import MAX_NAME
from minkms.state import policy as p
from minkms.state.model import Policy
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import POLICY_ACTIONS


def make(allow=None, deny=None):
    return Policy("p", allow or {}, deny or {}, 0, "")


class PatternTests(unittest.TestCase):
    def test_matches(self):
        for pattern, argument, expected in (
            ("my-key", "my-key", True),
            ("my-key", "my-key-1", False),
            ("my-key*", "my-key", True),
            ("my-key*", "my-key-1", True),
            ("my-key*", "other", False),
            ("*", "", True),
            ("*", "anything at all", True),
            ("a*c", "abbbc", True),
            ("a*c", "abbb", False),
            ("*-prod", "db-prod", True),
            ("k?", "k1", False),
            ("k?", "k?", True),
            ("k[12]", "k1", False),
            ("k[12]", "k[12]", True),
            ("a.b", "axb", False),
            ("*", "line\nbreak", True),
        ):
            self.assertEqual(p.matches(pattern, argument), expected, (pattern, argument))

    def test_may_match_prefix(self):
        for pattern, prefix, expected in (
            ("*", "", True),
            ("*", "abc", True),
            ("my-*", "", True),
            ("my-*", "my", True),
            ("my-*", "my-key", True),
            ("my-*", "other", False),
            ("exact", "ex", True),
            ("exact", "exact", True),
            ("exact", "exactly", False),
            ("a*z", "abc", True),
            ("", "", True),
            ("", "a", False),
        ):
            self.assertEqual(p.may_match_prefix(pattern, prefix), expected, (pattern, prefix))

    def test_covers_prefix(self):
        for pattern, prefix, expected in (
            ("*", "", True),
            ("*", "x", True),
            ("my-*", "my-", True),
            ("my-*", "my-key", True),
            ("my-*", "my", False),
            ("my-*", "", False),
            ("exact", "exact", False),
            ("a*z", "a", False),
            ("a**", "a", True),
        ):
            self.assertEqual(p.covers_prefix(pattern, prefix), expected, (pattern, prefix))

    def test_deny_wins(self):
        policy = make(allow={"KEY:ENCRYPT": ("*",)}, deny={"KEY:ENCRYPT": ("secret*",)})
        self.assertTrue(p.allows(policy, "KEY:ENCRYPT", "k"))
        self.assertFalse(p.allows(policy, "KEY:ENCRYPT", "secret-1"))
        self.assertFalse(p.allows(policy, "KEY:DECRYPT", "k"))
        self.assertFalse(p.allows(None, "KEY:ENCRYPT", "k"))

    def test_listing(self):
        policy = make(allow={"KEY:LIST": ("app-*",)}, deny={"KEY:LIST": ("app-secret*",)})
        self.assertTrue(p.allows_listing(policy, "KEY:LIST", ""))
        self.assertTrue(p.allows_listing(policy, "KEY:LIST", "app"))
        self.assertFalse(p.allows_listing(policy, "KEY:LIST", "db"))
        self.assertFalse(p.allows_listing(policy, "KEY:LIST", "app-secret"))
        self.assertFalse(p.allows_listing(None, "KEY:LIST", ""))


class PatternCostTests(unittest.TestCase):
    """Issue 11 item 1: no pattern makes a decision expensive (figures: bench/policy_match.py)."""

    def test_worst_pattern_against_longest_name(self):
        """
        The report's pattern with the most stars a policy may hold: a
        backtracking matcher never finished on these names.
        """
        worst = "*a" * p.MAX_STARS + "b"
        for name, expected in (
            ("a" * MAX_NAME, False),
            ("a" * (MAX_NAME - 1) + "b", True),
            ("a" * p.MAX_MATCHED_NAME, False),
            ("a" * (p.MAX_MATCHED_NAME - 1) + "b", True),
            ("a" * (p.MAX_STARS - 1) + "b", False),
        ):
            self.assertEqual(p.matches(worst, name), expected, len(name))
        policy = make(allow={"KEY:ENCRYPT": ("*",)}, deny={"KEY:ENCRYPT": (worst,)})
        self.assertTrue(p.allows(policy, "KEY:ENCRYPT", "a" * MAX_NAME))
        self.assertFalse(p.allows(policy, "KEY:ENCRYPT", "a" * (MAX_NAME - 1) + "b"))

    def test_overlong_argument_is_refused_unmatched(self):
        policy = make(allow={"KEY:ENCRYPT": ("*",), "KEY:LIST": ("*",)})
        self.assertTrue(p.allows(policy, "KEY:ENCRYPT", "k" * p.MAX_MATCHED_NAME))
        self.assertFalse(p.allows(policy, "KEY:ENCRYPT", "k" * (p.MAX_MATCHED_NAME + 1)))
        self.assertTrue(p.allows_listing(policy, "KEY:LIST", "k" * p.MAX_MATCHED_NAME))
        self.assertFalse(p.allows_listing(policy, "KEY:LIST", "k" * (p.MAX_MATCHED_NAME + 1)))

    def test_compiled_with_each_version(self):
        """A policy record carries its compiled rules; a new version, new ones."""
        first = make(allow={"KEY:ENCRYPT": ("a*",)})
        second = make(allow={"KEY:ENCRYPT": ("b*",)})
        self.assertIsNot(first.matcher, second.matcher)
        self.assertEqual(first, make(allow={"KEY:ENCRYPT": ("a*",)}))
        self.assertTrue(p.allows(first, "KEY:ENCRYPT", "a1"))
        self.assertFalse(p.allows(second, "KEY:ENCRYPT", "a1"))

    def test_limits(self):
        at_limit = {"KEY:STATUS": ["*" * p.MAX_STARS + "x" * (p.MAX_PATTERN_LENGTH - p.MAX_STARS)]}
        self.assertEqual(p.normalize_rules(at_limit, "allow"), {"KEY:STATUS": tuple(at_limit["KEY:STATUS"])})
        for rules, message in (
            (
                {"KEY:STATUS": ["x" * (p.MAX_PATTERN_LENGTH + 1)]},
                "invalid policy: a pattern of 'KEY:STATUS' is longer than 128 characters",
            ),
            (
                {"key:status": ["*" * (p.MAX_STARS + 1)]},
                "invalid policy: a pattern of 'KEY:STATUS' has more than 8 '*'",
            ),
        ):
            e = self.assertRaises(KMSError, p.normalize_rules, rules, "allow")
            self.assertEqual((e.status, e.message), (400, message))
        allow = {"KEY:STATUS": [f"k{i}" for i in range(100)]}
        deny = {"KEY:ENCRYPT": [f"k{i}" for i in range(28)] + ["k0", "k1"]}
        self.assertEqual(len(p.policy_from_json(json.dumps({"allow": allow, "deny": deny}))[1]["KEY:ENCRYPT"]), 28)
        deny["KEY:ENCRYPT"].append("one-too-many")
        e = self.assertRaises(KMSError, p.policy_from_json, json.dumps({"allow": allow, "deny": deny}))
        self.assertEqual((e.status, e.message), (400, "invalid policy: 129 patterns, at most 128 are allowed"))


class DocumentTests(unittest.TestCase):
    def test_three_forms_are_equal(self):
        forms = [
            '{"allow":{"KEY:ENCRYPT":"my-key*"},"deny":{}}',
            '{"allow":{"KEY:ENCRYPT":["my-key*"]},"deny":{}}',
            '{"allow":{"KEY:ENCRYPT":{"my-key*":{}}},"deny":{}}',
        ]
        results = {json.dumps(p.policy_from_json(f)) for f in forms}
        self.assertEqual(len(results), 1)
        self.assertEqual(p.policy_from_json(forms[0]), ({"KEY:ENCRYPT": ("my-key*",)}, {}))

    def test_spec_example(self):
        allow, deny = p.policy_from_json(
            '{"allow":{"KEY:STATUS":["*"],"KEY:LIST":["*"],"KEY:ENCRYPT":["*"],"KEY:DECRYPT":["*"]},"deny":{}}'
        )
        self.assertEqual(set(allow), {"KEY:STATUS", "KEY:LIST", "KEY:ENCRYPT", "KEY:DECRYPT"})
        self.assertEqual(deny, {})

    def test_case_insensitive_and_merged(self):
        allow, deny = p.policy_from_json(
            '{"allow":{"key:encrypt":"a","KEY:ENCRYPT":["b",""],"Key:Mac":""},'
            '"deny":{"key:decrypt":{"x":{}, "y":null}}}'
        )
        self.assertEqual(allow, {"KEY:ENCRYPT": ("a", "b"), "KEY:MAC": ()})
        self.assertEqual(deny, {"KEY:DECRYPT": ("x", "y")})

    def test_optional_sections(self):
        self.assertEqual(p.policy_from_json("{}"), ({}, {}))
        self.assertEqual(p.policy_from_json('{"allow":null}'), ({}, {}))

    def test_invalid(self):
        for text, message in (
            ("not json", None),
            ("[]", "invalid policy: must be a JSON object"),
            ('{"allow":{},"extra":1}', "invalid policy: unknown field 'extra' (expected 'allow' and 'deny')"),
            ('{"allow":[]}', "invalid policy: 'allow' must be an object"),
            ('{"allow":{"!INVALID:203":"*"}}', "invalid policy: unknown action '!INVALID:203' in allow"),
            ('{"deny":{"KEY:IMPORT":"*"}}', "invalid policy: unknown action 'KEY:IMPORT' in deny"),
            ('{"allow":{"KEY:NOPE":"*"}}', "invalid policy: unknown action 'KEY:NOPE' in allow"),
            ('{"allow":{"cluster:status":"*"}}', "invalid policy: 'CLUSTER:STATUS' cannot be granted by a policy"),
            ('{"allow":{"ENCLAVE:CREATE":"*"}}', "invalid policy: 'ENCLAVE:CREATE' cannot be granted by a policy"),
            ('{"allow":{"KEY:STATUS":5}}', "invalid policy: 'KEY:STATUS' must be a string, an array or an object"),
            ('{"allow":{"KEY:STATUS":[5]}}', "invalid policy: patterns of 'KEY:STATUS' must be strings"),
            ('{"allow":{"KEY:STATUS":{"a":5}}}', "invalid policy: rule of 'KEY:STATUS' pattern 'a' must be an object"),
        ):
            e = self.assertRaises(KMSError, p.policy_from_json, text)
            self.assertEqual(e.status, 400)
            if message:
                self.assertEqual(e.message, message)
            else:
                self.assertTrue(e.message.startswith("invalid policy: not valid JSON"), e.message)

    def test_cluster_actions_may_be_denied(self):
        self.assertEqual(p.policy_from_json('{"deny":{"ENCLAVE:CREATE":"*"}}'), ({}, {"ENCLAVE:CREATE": ("*",)}))

    def test_to_json_kms_go_style(self):
        text = p.policy_to_json({"KEY:ENCRYPT": ("bb", "a", "ccc*"), "KEY:MAC": ("x",)}, {"KEY:LIST": ()})
        self.assertEqual(
            json.loads(text),
            {"allow": {"KEY:ENCRYPT": ["a", "bb", "ccc*"], "KEY:MAC": "x"}, "deny": {"KEY:LIST": []}},
        )
        self.assertEqual(
            p.policy_from_json(text), ({"KEY:ENCRYPT": ("a", "bb", "ccc*"), "KEY:MAC": ("x",)}, {"KEY:LIST": ()})
        )

    def test_action_table_matches_wire(self):
        self.assertEqual(p.ACTIONS, POLICY_ACTIONS)
        self.assertNotIn("KEY:IMPORT", p.ACTIONS)


class ProtoTests(unittest.TestCase):
    def test_round_trip(self):
        rules = {"KEY:ENCRYPT": ("a*", "b"), "KEY:LIST": ()}
        message = pb.PolicyResponse()
        p.rules_to_proto(rules, message.Allow)
        decoded = pb.PolicyResponse.FromString(message.SerializeToString())
        self.assertEqual(p.raw_rules_from_proto(decoded.Allow), rules)
        self.assertEqual(p.normalize_rules(p.raw_rules_from_proto(decoded.Allow), "allow"), rules)

    def test_from_request(self):
        request = pb.CreatePolicyRequest(Name="p")
        request.Allow["key:encrypt"].Rules[""].SetInParent()
        request.Allow["key:encrypt"].Rules["k*"].SetInParent()
        raw = p.raw_rules_from_proto(request.Allow)
        self.assertEqual(raw, {"key:encrypt": ("", "k*")})
        self.assertEqual(p.normalize_rules(raw, "allow"), {"KEY:ENCRYPT": ("k*",)})


class RememberedDecisionTests(unittest.TestCase):
    """A policy record remembers its decisions; they are the decisions it would take afresh."""

    def test_many_names_asked_twice(self):
        """More names than a record remembers, short and long, asked twice, decided alike."""
        from minkms.state.patterns import MAX_DECISIONS

        record = Policy("mixed", {"KEY:DECRYPT": ("app-*", "exact")}, {"KEY:DECRYPT": ("app-secret*",)}, 0, "")
        names = [f"app-{i}" for i in range(MAX_DECISIONS + 50)]
        names += ["exact", "app-secret-1", "other", "app-" + "x" * MAX_NAME, "app-secret" + "x" * MAX_NAME]
        expected = [not n.startswith("app-secret") and (n.startswith("app-") or n == "exact") for n in names]
        for _ in range(2):
            self.assertEqual([p.allows(record, "KEY:DECRYPT", n) for n in names], expected)
            self.assertEqual([p.allows(record, "KEY:ENCRYPT", n) for n in names], [False] * len(names))
