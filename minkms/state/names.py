"""
Validation of the names and labels clients choose: enclave, key and policy
names, identities and identity tags.

The rules for names match C{minkms/wire/names.py} (non-empty, no C{/}, at
most 80 characters, no control characters); they are repeated here because
the state machine re-validates every write at apply time and must not
depend on the wire package.
"""

import re

from minkms.apikey import is_identity
from minkms.errors import bad_request

MAX_NAME_LENGTH = 80
MAX_TAGS = 32
MAX_TAG_KEY_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 256

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TAG_CHARS = re.compile(r"[A-Za-z0-9._/-]*")


def check_name(kind: str, name: str) -> None:
    """
    Reject a name that cannot be stored or used in a URL path.

    @param kind: what is named (C{"key"}, C{"enclave"}, C{"policy"}), for
        the message.
    @raise KMSError: 400.
    """
    if name == "":
        raise bad_request(f"invalid {kind} name: must not be empty")
    if "/" in name:
        raise bad_request(f"invalid {kind} name '{name}': must not contain '/'")
    if len(name) > MAX_NAME_LENGTH:
        raise bad_request(
            f"invalid {kind} name: longer than {MAX_NAME_LENGTH} characters"
        )
    if _CONTROL.search(name):
        raise bad_request(f"invalid {kind} name: contains control characters")


def check_identity(identity: str) -> None:
    """
    Reject an identity argument that is not an C{h1:} identity.

    @raise KMSError: 400.
    """
    if identity == "":
        raise bad_request("invalid identity: must not be empty")
    if not is_identity(identity):
        raise bad_request(
            f"invalid identity '{identity}': expected 'h1:' and 43 base64url characters"
        )


def check_tags(tags: dict[str, str]) -> None:
    """
    Reject identity tags beyond the documented limits: at most 32 tags,
    keys of 1-64 and values of 0-256 characters from C{[A-Za-z0-9._/-]}.

    @raise KMSError: 400.
    """
    if len(tags) > MAX_TAGS:
        raise bad_request(f"invalid tags: at most {MAX_TAGS} tags are allowed")
    for key in sorted(tags):
        value = tags[key]
        if not 0 < len(key) <= MAX_TAG_KEY_LENGTH or not _TAG_CHARS.fullmatch(key):
            raise bad_request(
                f"invalid tag key '{key}': must be 1 to {MAX_TAG_KEY_LENGTH} "
                "characters of A-Z a-z 0-9 . _ / -"
            )
        if len(value) > MAX_TAG_VALUE_LENGTH or not _TAG_CHARS.fullmatch(value):
            raise bad_request(
                f"invalid value of tag '{key}': must be at most "
                f"{MAX_TAG_VALUE_LENGTH} characters of A-Z a-z 0-9 . _ / -"
            )
