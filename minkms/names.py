"""
What counts as a valid enclave, key or policy name, and valid identity tags.

The spec leaves name rules open (section 13, question 7); ours:

  - 1 to 80 characters (Unicode code points);
  - no C{/} or C{\\}: enclave names are URL path segments and names may
    end up in file or log paths;
  - no C{*}: it is the policy wildcard, so a name holding it could not be
    granted on its own;
  - no control characters, and (strict rules) no format, private-use,
    unassigned or surrogate characters and no whitespace or other
    separators (Unicode categories C* and Z*): they make names that print
    alike but differ;
  - not C{.} or C{..}.

Tags (spec 5.6): at most 32; keys of 1 to 64 and values of at most 256
characters, all from C{[A-Za-z0-9._/-]}.

Two strengths of the same rules: the proposer checks the strict ones
before a write enters the log; apply checks only the part that cannot
depend on the Python version's Unicode database (what is "unassigned"
changes between versions), so replicas never judge a logged command
differently.
"""

import functools
import re
import unicodedata

from minkms.errors import bad_request

MAX_NAME = 80
MAX_TAGS = 32
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
KINDS = ("enclave", "key", "policy")

_FORBIDDEN = {"/": "'/'", "\\": "'\\'", "*": "'*'"}
_TAG_CHARS = re.compile(r"[A-Za-z0-9._/-]*\Z")
_PLAIN_ASCII = {
    True: re.compile(r"[!-)+-.0-\[\]-~]*\Z"),
    False: re.compile(r"[ -)+-.0-\[\]-~]*\Z"),
}
"""
Names of printable ASCII but for the forbidden characters (and, under the
strict rules, the space), which pass without a look at each character's
Unicode category: nearly every name, and most are new (every key
creation names one), so the cache below rarely knows them.
"""


def _refused_category(category: str, strict: bool) -> bool:
    return category[0] in "CZ" if strict else category == "Cc"


@functools.lru_cache(maxsize=4096)
def name_problem(name: str, strict: bool = True) -> str | None:
    """Why C{name} is not a valid name, or None (cached: every request names its enclave)."""
    if not name:
        return "empty"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if name in (".", ".."):
        return f"{name!r} is reserved"
    if _PLAIN_ASCII[strict].match(name):
        return None
    for position, char in enumerate(name, 1):
        if char in _FORBIDDEN:
            return f"contains {_FORBIDDEN[char]} at position {position}"
        if _refused_category(unicodedata.category(char), strict):
            return f"contains U+{ord(char):04X} at position {position}"
    return None


def validate_name(kind: str, name: str, strict: bool = True) -> None:
    """
    Reject a C{kind} name ("enclave", "key" or "policy").

    @raise KMSError: 400 C{"invalid <kind> name: <why>"}.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind of name {kind!r}")
    reason = name_problem(name, strict)
    if reason:
        raise bad_request(f"invalid {kind} name: {reason}")


def tag_problem(tags) -> str | None:
    """Why the identity tags C{tags} (a mapping) are not valid, or None."""
    if len(tags) > MAX_TAGS:
        return f"more than {MAX_TAGS} tags"
    for key in sorted(tags):
        value = tags[key]
        if not key or len(key) > MAX_TAG_KEY:
            return f"tag key must be 1 to {MAX_TAG_KEY} characters"
        if len(value) > MAX_TAG_VALUE:
            return f"value of tag {key!r} is longer than {MAX_TAG_VALUE} characters"
        if not _TAG_CHARS.match(key):
            return f"tag key {key!r} has characters outside [A-Za-z0-9._/-]"
        if not _TAG_CHARS.match(value):
            return f"value of tag {key!r} has characters outside [A-Za-z0-9._/-]"
    return None


def validate_tags(tags) -> None:
    """
    Reject identity tags beyond the limits of spec section 5.6.

    @raise KMSError: 400 C{"invalid identity tags: <why>"}.
    """
    reason = tag_problem(tags)
    if reason:
        raise bad_request(f"invalid identity tags: {reason}")
