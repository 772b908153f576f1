"""
Validation at apply time of the names and labels clients choose: enclave,
key and policy names, identities and identity tags.

The rules and messages are those of C{minkms/wire/names.py}, which the
state machine may not import.  One part is left out on purpose: the wire
rules reject every Unicode control, format, unassigned or separator
character, and what counts as "unassigned" depends on the Python version's
Unicode database; a replica on another Python must never judge a logged
command differently.  So apply checks only the stable part (ASCII and C1
control characters); the proposer checks the full rules before proposing.
"""

import re
import unicodedata

from minkms.apikey import is_identity
from minkms.errors import bad_request

MAX_NAME = 80
MAX_TAGS = 32
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256

_FORBIDDEN = {"/": "'/'", "\\": "'\\'", "*": "'*'"}
_TAG_CHARS = re.compile(r"[A-Za-z0-9._/-]*\Z")


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
        if unicodedata.category(char) == "Cc":
            return f"contains U+{ord(char):04X} at position {position}"
    return None


def check_name(kind: str, name: str) -> None:
    """
    Reject a name that cannot be stored or used in a URL path.

    @param kind: C{"enclave"}, C{"key"} or C{"policy"}, for the message.
    @raise KMSError: 400 C{"invalid <kind> name: <why>"}.
    """
    reason = _problem(name)
    if reason:
        raise bad_request(f"invalid {kind} name: {reason}")


def check_identity(identity: str) -> None:
    """
    Reject an identity argument that is not an C{h1:} identity.

    @raise KMSError: 400.
    """
    if identity == "":
        raise bad_request("invalid identity: empty")
    if not is_identity(identity):
        raise bad_request(
            f"invalid identity '{identity}': expected 'h1:' and 43 base64url characters"
        )


def _tag_problem(tags: dict[str, str]) -> str | None:
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


def check_tags(tags: dict[str, str]) -> None:
    """
    Reject identity tags beyond the limits of spec section 5.6: at most 32
    tags, keys of 1-64 and values of at most 256 characters, all from
    C{[A-Za-z0-9._/-]}.

    @raise KMSError: 400 C{"invalid identity tags: <why>"}.
    """
    reason = _tag_problem(tags)
    if reason:
        raise bad_request(f"invalid identity tags: {reason}")
