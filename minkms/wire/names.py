"""
What counts as a valid enclave, key or policy name, and valid identity tags.

The spec leaves name rules open (section 13, question 7); ours:

  - 1 to 80 characters (Unicode code points);
  - no C{/} or C{\\}: enclave names are URL path segments and names may
    end up in file or log paths;
  - no C{*}: it is the policy wildcard, so a name holding it could not be
    granted on its own;
  - no control, format, private-use, unassigned or surrogate characters
    and no whitespace or other separators (Unicode categories C* and Z*):
    they make names that print alike but differ;
  - not C{.} or C{..}.

Everything else is allowed, which covers every name MinIO and the
examples of the spec use (C{my-key}, C{minio-default-key}, C{tenant-a}).

Tags (spec 5.6): at most 32; keys of 1 to 64 and values of at most 256
characters, all from C{[A-Za-z0-9._/-]}.
"""

import re
import unicodedata

from minkms.errors import KMSError

MAX_NAME = 80
MAX_TAGS = 32
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
KINDS = ("enclave", "key", "policy")
_FORBIDDEN = {"/": "'/'", "\\": "'\\'", "*": "'*'"}
_TAG_CHARS = re.compile(r"[A-Za-z0-9._/-]*\Z")


def validate_name(kind: str, name: str) -> None:
    """
    Return if C{name} is a valid C{kind} name ("enclave", "key" or
    "policy"), else raise L{KMSError} 400 C{"invalid <kind> name: <why>"}.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind of name {kind!r}")
    reason = _problem(name)
    if reason:
        raise KMSError(400, f"invalid {kind} name: {reason}")


def validate_tags(tags) -> None:
    """
    Return if the identity tags C{tags} (a mapping) are within the limits,
    else raise L{KMSError} 400 C{"invalid identity tags: <why>"}.
    """
    reason = _tag_problem(tags)
    if reason:
        raise KMSError(400, f"invalid identity tags: {reason}")


def _problem(name: str) -> str | None:
    if not name:
        return "empty"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if name in (".", ".."):
        return f"{name!r} is reserved"
    for position, char in enumerate(name, 1):
        if char in _FORBIDDEN:
            return f"contains {_FORBIDDEN[char]} at position {position}"
        if unicodedata.category(char)[0] in "CZ":
            return f"contains U+{ord(char):04X} at position {position}"
    return None


def _tag_problem(tags) -> str | None:
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
