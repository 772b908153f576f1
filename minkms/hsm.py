"""
The hardware security module (HSM) abstraction and the software HSM.

The HSM key is the root of trust of a cluster (DESIGN decision 2).  Every
node derives from it, by HKDF-SHA256 with the fixed labels below:

  - the SysAdmin API key (C{k1:}) printed in the banner,
  - the peer key that authenticates nodes to each other on the peer channel,
  - the key that seals the root encryption key (REK) in C{kms.db},
  - the HMAC key that seals the audit trail (C{minkms audit verify}).

The labels are part of the on-disk and on-wire contract: changing one
changes every cluster's root API key.  Keep the L{HSM} interface small
(seal, unseal, derive) so that PKCS#11 or Vault transit can be added later.
"""

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from minkms.errors import ErrDecrypt, KMSError

SOFT_HSM_PREFIX = "hsm:aes256:"
SOFT_HSM_NAME = "hsm:minio:soft"

LABEL_SYSADMIN_API_KEY = b"minkms/v1/sysadmin-api-key"
LABEL_PEER_KEY = b"minkms/v1/peer-key"
LABEL_SEAL_KEY = b"minkms/v1/seal-root-encryption-key"
LABEL_AUDIT_SEAL_KEY = b"minkms/v1/audit-seal-key"

_NONCE_SIZE = 12


class HSMKeyError(ValueError):
    """The text given as an HSM key is not one."""


class SoftHSM:
    """
    A software HSM: 32 secret bytes held in memory, given to the server as
    C{hsm:aes256:<standard base64>} in C{MINIO_KMS_HSM_KEY}.
    """

    name = SOFT_HSM_NAME

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise HSMKeyError("HSM key must be 32 bytes")
        self._secret = secret
        self._seal_key = AESGCM(self.derive(LABEL_SEAL_KEY))

    @classmethod
    def generate(cls) -> "SoftHSM":
        """A new HSM with a random key, for C{minkms --soft-hsm} and C{--dev}."""
        return cls(os.urandom(32))

    @classmethod
    def parse(cls, text: str) -> "SoftHSM":
        """
        Parse C{hsm:aes256:<base64>}.

        @raise HSMKeyError: with a one-line reason when C{text} is malformed.
        """
        text = text.strip()
        if not text.startswith(SOFT_HSM_PREFIX):
            raise HSMKeyError("invalid HSM key: must start with 'hsm:aes256:'")
        encoded = text[len(SOFT_HSM_PREFIX) :]
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise HSMKeyError("invalid HSM key: not valid base64") from None
        if len(secret) != 32:
            raise HSMKeyError(f"invalid HSM key: must encode 32 bytes, not {len(secret)}")
        return cls(secret)

    def to_text(self) -> str:
        """The key as the operator stores it (shown once by C{--soft-hsm})."""
        return SOFT_HSM_PREFIX + base64.b64encode(self._secret).decode("ascii")

    def derive(self, label: bytes, length: int = 32) -> bytes:
        """Derive a purpose-bound secret from the HSM key."""
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(self._secret)

    def seal(self, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        """Encrypt and authenticate C{plaintext}: C{nonce || ciphertext || tag}."""
        nonce = os.urandom(_NONCE_SIZE)
        return nonce + self._seal_key.encrypt(nonce, plaintext, associated_data)

    def unseal(self, sealed: bytes, associated_data: bytes = b"") -> bytes:
        """
        Reverse L{seal}.

        @raise KMSError: L{ErrDecrypt} when C{sealed} was not sealed by this
            HSM with this associated data.
        """
        if len(sealed) < _NONCE_SIZE + 16:
            raise ErrDecrypt
        try:
            return self._seal_key.decrypt(sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:], associated_data)
        except InvalidTag:
            raise ErrDecrypt from None

    def sysadmin_api_key(self) -> str:
        """The cluster's root C{k1:} API key, the same on every node."""
        from minkms.apikey import api_key_from_seed

        return api_key_from_seed(self.derive(LABEL_SYSADMIN_API_KEY))

    def audit_seal_key(self) -> bytes:
        """The HMAC key of the audit trail's seal records, the same on every node."""
        return self.derive(LABEL_AUDIT_SEAL_KEY)

    def peer_api_key(self) -> str:
        """The C{k1:} key whose certificate nodes present to each other."""
        from minkms.apikey import api_key_from_seed

        return api_key_from_seed(self.derive(LABEL_PEER_KEY))


def unseal_error_text(error: KMSError) -> str:
    """The guide's start-up message when the REK cannot be unsealed."""
    return f"failed to unseal root encryption key with HSM: {error.message}"
