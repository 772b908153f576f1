"""
Errors that cross module borders and reach clients.

A L{KMSError} is the pair (HTTP status, message) that kms-go compares
verbatim (spec section 7.2).  The state machine, the wire codec and the
server raise these; only the HTTP layer turns them into responses, so the
exact texts live here and nowhere else.
"""


class KMSError(Exception):
    """
    An error a client sees: an HTTP status and a one-line message.

    @ivar status: the HTTP status code sent with the error body.
    @ivar message: the text sent as C{ErrResponse.message}.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KMSError):
            return NotImplemented
        return (self.status, self.message) == (other.status, other.message)

    def __hash__(self) -> int:
        return hash((self.status, self.message))

    def __repr__(self) -> str:
        return f"KMSError({self.status}, {self.message!r})"


# The canonical errors recognised by kms-go (errors.Is matches status and text).
ErrPermission = KMSError(403, "access denied: insufficient permissions")
ErrEnclaveExists = KMSError(409, "enclave already exists")
ErrEnclaveNotFound = KMSError(404, "enclave does not exist")
ErrKeyExists = KMSError(409, "key already exists")
ErrKeyNotFound = KMSError(404, "key does not exist")
ErrPolicyNotFound = KMSError(404, "policy does not exist")
ErrIdentityNotFound = KMSError(404, "identity does not exist")
ErrDecrypt = KMSError(400, "invalid ciphertext")

# Ours, in the style of the canonical "... already exists" errors: an
# identity lives in one enclave only (spec section 1.6).
ErrIdentityInOtherEnclave = KMSError(409, "identity already exists in another enclave")


def bad_request(message: str) -> KMSError:
    """An invalid argument or malformed request (400)."""
    return KMSError(400, message)


def not_found(message: str) -> KMSError:
    """An unknown path or resource that has no canonical error (404)."""
    return KMSError(404, message)


def unavailable(message: str) -> KMSError:
    """Not ready: no leader, no quorum, storage stopped (503)."""
    return KMSError(503, message)


def not_implemented(message: str) -> KMSError:
    """A command this build does not support yet (501)."""
    return KMSError(501, message)


def internal(message: str) -> KMSError:
    """A server fault that is not the caller's (500)."""
    return KMSError(500, message)


class StartupError(Exception):
    """
    A reason the server cannot start, printed as one line before exiting
    non-zero (no traceback): bad key, bad config, busy port, locked volume.
    """
