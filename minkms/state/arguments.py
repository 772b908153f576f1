"""
Validation at apply time of the names and labels clients choose: enclave,
key and policy names, identities and identity tags.

These are the rules of L{minkms.names} without the part that depends on
the Python version's Unicode database, so every replica judges a logged
command alike; the proposer checks the strict rules before proposing.
"""

from minkms.apikey import is_identity
from minkms.errors import bad_request
from minkms.names import validate_name, validate_tags


def check_name(kind: str, name: str) -> None:
    """
    Reject a name that cannot be stored or used in a URL path.

    @param kind: C{"enclave"}, C{"key"} or C{"policy"}, for the message.
    @raise KMSError: 400 C{"invalid <kind> name: <why>"}.
    """
    validate_name(kind, name, strict=False)


def check_identity(identity: str) -> None:
    """
    Reject an identity argument that is not an C{h1:} identity.

    @raise KMSError: 400.
    """
    if identity == "":
        raise bad_request("invalid identity: empty")
    if not is_identity(identity):
        raise bad_request(f"invalid identity '{identity}': expected 'h1:' and 43 base64url characters")


check_tags = validate_tags
