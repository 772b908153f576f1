"""
Policies: their rules, their JSON and protobuf forms, and how they decide
(spec section 8).

Internally a policy's C{allow} and C{deny} are maps from a canonical action
name (C{KEY:ENCRYPT}) to a sorted tuple of patterns.  A pattern is a glob in
which only C{*} is special (any sequence, including none); every other
character, C{?} and C{[} included, stands for itself.

Deny by default; any matching deny pattern wins; else any matching allow
pattern allows.
"""

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from minkms.errors import bad_request
from minkms.state.model import Policy, Rules

CLUSTER_ACTIONS = frozenset(
    {
        "CLUSTER:ADDNODE",
        "CLUSTER:REMOVENODE",
        "CLUSTER:STATUS",
        "CLUSTER:EDIT",
        "CLUSTER:ADDHSM",
        "CLUSTER:REMOVEHSM",
        "ENCLAVE:CREATE",
        "ENCLAVE:DELETE",
        "ENCLAVE:STATUS",
        "ENCLAVE:LIST",
    }
)
"""Actions only the SysAdmin may perform; a policy can never allow them."""

ENCLAVE_ACTIONS = frozenset(
    {
        "KEY:CREATE",
        "KEY:DELETE",
        "KEY:STATUS",
        "KEY:ENCRYPT",
        "KEY:DECRYPT",
        "KEY:GENERATE",
        "KEY:LIST",
        "KEY:LISTVERSIONS",
        "KEY:MAC",
        "POLICY:CREATE",
        "POLICY:DELETE",
        "POLICY:ASSIGN",
        "POLICY:GET",
        "POLICY:STATUS",
        "POLICY:LIST",
        "IDENTITY:CREATE",
        "IDENTITY:DELETE",
        "IDENTITY:STATUS",
        "IDENTITY:LIST",
    }
)
"""
Actions a policy may grant.  Key import (code 203) has no name kms-go can
parse, so it is governed by C{KEY:CREATE}.
"""

ACTIONS = CLUSTER_ACTIONS | ENCLAVE_ACTIONS
"""Every name a policy may mention: the named commands of spec section 4.5."""


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches(pattern: str, argument: str) -> bool:
    """Whether a pattern matches a whole argument; only C{*} is a wildcard."""
    return _compile(pattern).fullmatch(argument) is not None


def _states_after(pattern: str, prefix: str) -> set[int]:
    """Positions in C{pattern} reachable after reading C{prefix}."""

    def closure(positions):
        out = set()
        for i in positions:
            while True:
                out.add(i)
                if i < len(pattern) and pattern[i] == "*":
                    i += 1
                else:
                    break
        return out

    states = closure({0})
    for char in prefix:
        step = set()
        for i in states:
            if i < len(pattern):
                if pattern[i] == "*":
                    step.add(i)
                elif pattern[i] == char:
                    step.add(i + 1)
        states = closure(step)
        if not states:
            break
    return states


def may_match_prefix(pattern: str, prefix: str) -> bool:
    """Whether some string starting with C{prefix} matches C{pattern}."""
    return bool(_states_after(pattern, prefix))


def covers_prefix(pattern: str, prefix: str) -> bool:
    """Whether every string starting with C{prefix} matches C{pattern}."""
    return any(
        pattern[i:] and set(pattern[i:]) == {"*"}
        for i in _states_after(pattern, prefix)
    )


def allows(policy: Policy | None, action: str, argument: str) -> bool:
    """The decision for one action on one argument: deny wins, default deny."""
    if policy is None:
        return False
    if any(matches(p, argument) for p in policy.deny.get(action, ())):
        return False
    return any(matches(p, argument) for p in policy.allow.get(action, ()))


def allows_listing(policy: Policy | None, action: str, prefix: str) -> bool:
    """
    Whether a LIST with this prefix may run at all: no deny pattern covers
    every name with the prefix, and some allow pattern could match one.
    """
    if policy is None:
        return False
    if any(covers_prefix(p, prefix) for p in policy.deny.get(action, ())):
        return False
    return any(may_match_prefix(p, prefix) for p in policy.allow.get(action, ()))


def normalize_rules(raw: Mapping[str, Iterable[str]], section: str) -> Rules:
    """
    Validate rules as written by a client and return their canonical form:
    upper-case action names, patterns de-duplicated and sorted, empty
    patterns dropped.

    @param section: C{"allow"} or C{"deny"}; cluster and enclave actions
        can never be allowed.
    @raise KMSError: 400 for an unknown action (C{!INVALID:203},
        C{KEY:IMPORT}, ...) or a cluster action in C{allow}.
    """
    merged: dict[str, set[str]] = {}
    for name in sorted(raw):
        action = name.upper()
        if action not in ACTIONS:
            raise bad_request(
                f"invalid policy: unknown action '{name}' in {section}"
            )
        if section == "allow" and action in CLUSTER_ACTIONS:
            raise bad_request(
                f"invalid policy: '{action}' cannot be granted by a policy"
            )
        patterns = merged.setdefault(action, set())
        for pattern in raw[name]:
            if not isinstance(pattern, str):
                raise bad_request(
                    f"invalid policy: patterns of '{name}' must be strings"
                )
            if pattern:
                patterns.add(pattern)
    return {action: tuple(sorted(patterns)) for action, patterns in merged.items()}


def _rule_set(action: str, value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for pattern, rule in value.items():
            if rule is not None and not isinstance(rule, dict):
                raise bad_request(
                    f"invalid policy: rule of '{action}' pattern '{pattern}' must be an object"
                )
        return list(value)
    raise bad_request(
        f"invalid policy: '{action}' must be a string, an array or an object"
    )


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
    except ValueError as e:
        raise bad_request(f"invalid policy: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise bad_request("invalid policy: must be a JSON object")
    extra = sorted(set(doc) - {"allow", "deny"})
    if extra:
        raise bad_request(
            f"invalid policy: unknown field '{extra[0]}' (expected 'allow' and 'deny')"
        )
    result = []
    for section in ("allow", "deny"):
        rules = doc.get(section)
        if rules is None:
            rules = {}
        if not isinstance(rules, dict):
            raise bad_request(f"invalid policy: '{section}' must be an object")
        raw = {action: _rule_set(action, value) for action, value in rules.items()}
        result.append(normalize_rules(raw, section))
    return result[0], result[1]


def _kms_go_order(patterns: Iterable[str]) -> list[str]:
    return sorted(patterns, key=lambda p: (len(p), p))


def policy_to_json(allow: Rules, deny: Rules) -> str:
    """
    The JSON document of a policy, serialising rule sets as kms-go does: a
    bare string for one pattern, otherwise an array sorted by length then
    text.
    """

    def section(rules):
        out = {}
        for action in sorted(rules):
            patterns = _kms_go_order(rules[action])
            out[action] = patterns[0] if len(patterns) == 1 else patterns
        return out

    return json.dumps({"allow": section(allow), "deny": section(deny)}, indent=2)


def raw_rules_from_proto(rule_sets) -> dict[str, tuple[str, ...]]:
    """
    The rules of a protobuf C{map<string, RuleSet>} as sent, unvalidated:
    action name -> sorted patterns.
    """
    return {action: tuple(sorted(rule_sets[action].Rules)) for action in rule_sets}


def rules_to_proto(rules: Rules, rule_sets) -> None:
    """Fill a protobuf C{map<string, RuleSet>} from canonical rules."""
    for action in sorted(rules):
        rule_set = rule_sets.get_or_create(action)
        for pattern in rules[action]:
            rule_set.Rules.get_or_create(pattern)
