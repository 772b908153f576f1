"""
Key types, the ciphertext layout, data-key generation and MACs of the KMS
keys (DESIGN decision 8, spec section 6.3).

A ciphertext names the key version and algorithm that produced it, so that
KEY:DECRYPT with version 0 (what MinIO sends) finds the right version after
a rotation::

    [0x01 format][u32 BE key version][u8 algorithm][12-byte nonce][AEAD ct || 16-byte tag]

The AEAD associated data is the 6 header bytes followed by SHA-256 of the
caller's associated data, which binds version and algorithm to the
ciphertext.  The first byte is never C{{}, so MinIO never mistakes one for
its legacy JSON format.

Each key version's 32 bytes of material are never used directly: HKDF
derives one subkey for encryption and another for MACs, both bound to the
version number.  These labels are part of the on-disk contract.
"""

import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from minkms.errors import ErrDecrypt, bad_request

AES256 = "AES256"
CHACHA20 = "ChaCha20"
KEY_TYPES = (AES256, CHACHA20)
DEFAULT_KEY_TYPE = AES256

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
FORMAT_V1 = 0x01
MAX_VERSION = 0xFFFFFFFF

DEFAULT_DEK_LENGTH = 32
MAX_DEK_LENGTH = 1024

LABEL_ENCRYPT = b"minkms/v1/key-encrypt"
LABEL_MAC = b"minkms/v1/key-mac"

_ALGORITHM_IDS = {AES256: 1, CHACHA20: 2}
_AEADS = {AES256: AESGCM, CHACHA20: ChaCha20Poly1305}
_HEADER = struct.Struct(">BIB")
_MIN_CIPHERTEXT = _HEADER.size + NONCE_SIZE + TAG_SIZE


def key_type(name: str) -> str:
    """
    The canonical spelling of a key type given in a request: C{""} means
    the default (C{AES256}); matching is case-insensitive.

    @raise KMSError: 400 for anything that is not a known type.
    """
    if name == "":
        return DEFAULT_KEY_TYPE
    for known in KEY_TYPES:
        if name.lower() == known.lower():
            return known
    raise bad_request(f"invalid key type '{name}': must be {AES256} or {CHACHA20}")


def new_key_material() -> bytes:
    """Fresh random material for a new key version (both types use 32 bytes)."""
    return os.urandom(KEY_SIZE)


def check_key_material(material: bytes, type_name: str) -> None:
    """
    Reject imported material that does not fit the key type.

    @raise KMSError: 400 naming the expected length.
    """
    if len(material) != KEY_SIZE:
        raise bad_request(f"invalid key: a {type_name} key must be {KEY_SIZE} bytes, not {len(material)}")


def _subkey(material: bytes, label: bytes, version: int, extra: bytes = b"") -> bytes:
    info = label + struct.pack(">I", version) + extra
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(material)


def _associated_data(header: bytes, aad: bytes) -> bytes:
    return header + hashlib.sha256(aad).digest()


class VersionCipher:
    """
    The derived AEAD and MAC key of one key version.

    Deriving them costs more than encrypting a data key, so the enclave
    holding a key version keeps its cipher (L{minkms.state.model.Enclave.cipher})
    and drops it with the version: no cache keyed by key material outlives
    a deleted key.
    """

    __slots__ = ("type_name", "version", "_aead", "_mac_key")

    def __init__(self, material: bytes, type_name: str, version: int) -> None:
        if not 0 < version <= MAX_VERSION:
            raise ValueError(f"key version out of range: {version}")
        algorithm = struct.pack(">B", _ALGORITHM_IDS[type_name])
        self.type_name = type_name
        self.version = version
        self._aead = _AEADS[type_name](_subkey(material, LABEL_ENCRYPT, version, algorithm))
        self._mac_key = _subkey(material, LABEL_MAC, version)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt under this version with a fresh nonce, binding C{aad}."""
        header = _HEADER.pack(FORMAT_V1, self.version, _ALGORITHM_IDS[self.type_name])
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, plaintext, _associated_data(header, aad))
        return header + nonce + sealed

    def decrypt(self, ciphertext: bytes, aad: bytes) -> bytes:
        """
        Reverse L{encrypt}.

        @raise KMSError: L{ErrDecrypt} for a malformed or tampered
            ciphertext, wrong associated data, or a ciphertext of another
            version or algorithm.
        """
        if parse_ciphertext_version(ciphertext) != self.version:
            raise ErrDecrypt
        header = ciphertext[: _HEADER.size]
        if header[-1] != _ALGORITHM_IDS[self.type_name]:
            raise ErrDecrypt
        nonce = ciphertext[_HEADER.size : _HEADER.size + NONCE_SIZE]
        sealed = ciphertext[_HEADER.size + NONCE_SIZE :]
        try:
            return self._aead.decrypt(nonce, sealed, _associated_data(header, aad))
        except InvalidTag:
            raise ErrDecrypt from None

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA-256 of C{message} under the version's MAC subkey; deterministic."""
        return hmac.new(self._mac_key, message, hashlib.sha256).digest()


def encrypt(material: bytes, type_name: str, version: int, plaintext: bytes, aad: bytes) -> bytes:
    """
    Encrypt C{plaintext} under one key version, binding C{aad}.

    Uses a fresh random nonce, so the result differs on every call.
    """
    return VersionCipher(material, type_name, version).encrypt(plaintext, aad)


def parse_ciphertext_version(ciphertext: bytes) -> int:
    """
    The key version named in a ciphertext's header (for decrypt with
    version 0).

    @raise KMSError: L{ErrDecrypt} when the bytes cannot be one of ours.
    """
    if len(ciphertext) < _MIN_CIPHERTEXT:
        raise ErrDecrypt
    fmt, version, algorithm = _HEADER.unpack_from(ciphertext)
    if fmt != FORMAT_V1 or version == 0 or algorithm not in _ALGORITHM_IDS.values():
        raise ErrDecrypt
    return version


def decrypt(material: bytes, type_name: str, version: int, ciphertext: bytes, aad: bytes) -> bytes:
    """
    Reverse L{encrypt} for the key version whose material is given.

    @raise KMSError: L{ErrDecrypt}, as L{VersionCipher.decrypt}.
    """
    return VersionCipher(material, type_name, version).decrypt(ciphertext, aad)


def generate_data_key(length: int) -> bytes:
    """
    A fresh random data-encryption key for KEY:GENERATE.

    @param length: bytes wanted; 0 means 32.
    @raise KMSError: 400 when longer than 1024 bytes.
    """
    if length == 0:
        length = DEFAULT_DEK_LENGTH
    if length > MAX_DEK_LENGTH:
        raise bad_request(f"invalid key length {length}: must be at most {MAX_DEK_LENGTH} bytes")
    return os.urandom(length)


def mac(material: bytes, version: int, message: bytes) -> bytes:
    """HMAC-SHA-256 of C{message} under the version's MAC subkey; deterministic."""
    return hmac.new(_subkey(material, LABEL_MAC, version), message, hashlib.sha256).digest()
