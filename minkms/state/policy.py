"""
Policies: their rules, their JSON and protobuf forms, and how they decide
(spec section 8).

Internally a policy's C{allow} and C{deny} are maps from a canonical action
name (C{KEY:ENCRYPT}) to a sorted tuple of patterns.  A pattern is a glob in
which only C{*} is special (any sequence, including none); every other
character, C{?} and C{[} included, stands for itself.

Deny by default; any matching deny pattern wins; else any matching allow
pattern allows.  Patterns are decided in time linear in the name
(L{minkms.state.patterns}), compiled once per policy record, and a policy's
size is bounded (L{MAX_PATTERNS}, L{MAX_PATTERN_LENGTH}, L{MAX_STARS}), so
no tenant's policy can stall the node (issue 11).
"""

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from minkms.errors import bad_request
from minkms.state.model import Policy, Rules
from minkms.state.patterns import Glob
from minkms.wire.commands import BY_NAME, POLICY_ACTIONS, SCOPE_CLUSTER

if TYPE_CHECKING:
    from google.protobuf.internal.containers import MessageMap

    from minkms.wire import kms_pb2 as pb

ACTIONS = POLICY_ACTIONS
"""Every name a policy may mention: the named commands of the command table (spec section 4.5)."""

CLUSTER_ACTIONS = frozenset(name for name in ACTIONS if BY_NAME[name].scope == SCOPE_CLUSTER)
"""Actions only the SysAdmin may perform; a policy can never allow them."""

ENCLAVE_ACTIONS = ACTIONS - CLUSTER_ACTIONS
"""
Actions a policy may grant.  Key import (code 203) has no name kms-go can
parse, so it is governed by C{KEY:CREATE}.
"""


MAX_PATTERNS = 128
"""Patterns a policy may hold, allow and deny together."""

MAX_PATTERN_LENGTH = 128
"""Characters in one pattern (a name has at most 80)."""

MAX_STARS = 8
"""Wildcards in one pattern."""

MAX_MATCHED_NAME = 1024
"""
Arguments longer than this are refused without matching: no valid name or
identity comes near it, and it bounds what one decision may cost.
"""


def matches(pattern: str, argument: str) -> bool:
    """Whether a pattern matches a whole argument; only C{*} is a wildcard."""
    return Glob(pattern).matches(argument)


def may_match_prefix(pattern: str, prefix: str) -> bool:
    """Whether some string starting with C{prefix} matches C{pattern}."""
    return Glob(pattern).may_match_prefix(prefix)


def covers_prefix(pattern: str, prefix: str) -> bool:
    """Whether every string starting with C{prefix} matches C{pattern}."""
    return Glob(pattern).covers_prefix(prefix)


def allows(policy: Policy | None, action: str, argument: str) -> bool:
    """The decision for one action on one argument: deny wins, default deny."""
    if policy is None or len(argument) > MAX_MATCHED_NAME:
        return False
    return policy.matcher.allows(action, argument)


def allows_listing(policy: Policy | None, action: str, prefix: str) -> bool:
    """
    Whether a LIST with this prefix may run at all: no deny pattern covers
    every name with the prefix, and some allow pattern could match one.
    """
    if policy is None or len(prefix) > MAX_MATCHED_NAME:
        return False
    return policy.matcher.allows_listing(action, prefix)


def _pattern_problem(pattern: str) -> str | None:
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"is longer than {MAX_PATTERN_LENGTH} characters"
    if pattern.count("*") > MAX_STARS:
        return f"has more than {MAX_STARS} '*'"
    return None


def check_policy_size(allow: Rules, deny: Rules) -> None:
    """
    Refuse a policy holding more patterns than L{MAX_PATTERNS} (after
    de-duplication), so no policy makes every request it governs costly.

    @raise KMSError: 400.
    """
    count = sum(len(p) for rules in (allow, deny) for p in rules.values())
    if count > MAX_PATTERNS:
        raise bad_request(f"invalid policy: {count} patterns, at most {MAX_PATTERNS} are allowed")


def normalize_rules(raw: Mapping[str, Iterable[str]], section: str) -> Rules:
    """
    Validate rules as written by a client and return their canonical form:
    upper-case action names, patterns de-duplicated and sorted, empty
    patterns dropped.

    @param section: C{"allow"} or C{"deny"}; cluster and enclave actions
        can never be allowed.
    @raise KMSError: 400 for an unknown action (C{!INVALID:203},
        C{KEY:IMPORT}, ...), a cluster action in C{allow}, or a pattern
        longer than L{MAX_PATTERN_LENGTH} or with more than L{MAX_STARS}
        stars.
    """
    merged: dict[str, set[str]] = {}
    for name in sorted(raw):
        action = name.upper()
        if action not in ACTIONS:
            raise bad_request(f"invalid policy: unknown action '{name}' in {section}")
        if section == "allow" and action in CLUSTER_ACTIONS:
            raise bad_request(f"invalid policy: '{action}' cannot be granted by a policy")
        patterns = merged.setdefault(action, set())
        for pattern in raw[name]:
            if not isinstance(pattern, str):
                raise bad_request(f"invalid policy: patterns of '{name}' must be strings")
            if not pattern:
                continue
            problem = _pattern_problem(pattern)
            if problem:
                raise bad_request(f"invalid policy: a pattern of '{action}' {problem}")
            patterns.add(pattern)
    return {action: tuple(sorted(patterns)) for action, patterns in merged.items()}


def _rule_set(action: str, value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for pattern, rule in value.items():
            if rule is not None and not isinstance(rule, dict):
                raise bad_request(f"invalid policy: rule of '{action}' pattern '{pattern}' must be an object")
        return list(value)
    raise bad_request(f"invalid policy: '{action}' must be a string, an array or an object")


def policy_from_json(text: str | bytes) -> tuple[Rules, Rules]:
    """
    Parse a JSON policy document (C{minkms add-policy NAME FILE}) into
    canonical C{(allow, deny)} rules.

    A rule set may be a string, an array of strings or an object whose keys
    are patterns; action names are case-insensitive.

    @raise KMSError: 400 with the reason.
    """
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise bad_request(f"invalid policy: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise bad_request("invalid policy: must be a JSON object")
    extra = sorted(set(doc) - {"allow", "deny"})
    if extra:
        raise bad_request(f"invalid policy: unknown field '{extra[0]}' (expected 'allow' and 'deny')")
    result = []
    for section in ("allow", "deny"):
        rules = doc.get(section)
        if rules is None:
            rules = {}
        if not isinstance(rules, dict):
            raise bad_request(f"invalid policy: '{section}' must be an object")
        raw = {action: _rule_set(action, value) for action, value in rules.items()}
        result.append(normalize_rules(raw, section))
    check_policy_size(result[0], result[1])
    return result[0], result[1]


def _kms_go_order(patterns: Iterable[str]) -> list[str]:
    return sorted(patterns, key=lambda p: (len(p), p))


def policy_to_json(allow: Rules, deny: Rules) -> str:
    """
    The JSON document of a policy, serialising rule sets as kms-go does: a
    bare string for one pattern, otherwise an array sorted by length then
    text.
    """

    def section(rules: Rules) -> dict[str, str | list[str]]:
        out: dict[str, str | list[str]] = {}
        for action in sorted(rules):
            patterns = _kms_go_order(rules[action])
            out[action] = patterns[0] if len(patterns) == 1 else patterns
        return out

    return json.dumps({"allow": section(allow), "deny": section(deny)}, indent=2)


def raw_rules_from_proto(rule_sets: "Mapping[str, pb.RuleSet]") -> dict[str, tuple[str, ...]]:
    """
    The rules of a protobuf C{map<string, RuleSet>} as sent, unvalidated:
    action name -> sorted patterns.
    """
    return {action: tuple(sorted(rule_sets[action].Rules)) for action in rule_sets}


def rules_to_proto(rules: Rules, rule_sets: "MessageMap[str, pb.RuleSet]") -> None:
    """Fill a protobuf C{map<string, RuleSet>} from canonical rules."""
    for action in sorted(rules):
        rule_set = rule_sets.get_or_create(action)
        for pattern in rules[action]:
            rule_set.Rules.get_or_create(pattern)
