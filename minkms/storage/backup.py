"""
The sealed backup file of C{minkms backup} (C{GET /v1/db}) and C{minkms
restore} (C{PUT /v1/db}).

Pure.  A backup is self-describing and opens only with the HSM key that
made it.  Layout (big-endian)::

    0       8     magic "MINKMSBK"
    8       2     format version (1)
    10      2     cluster ID length n
    12      n     cluster ID (UTF-8)
    12+n    2     sealed key length m
    14+n    m     a fresh 32-byte backup key, sealed by the HSM with
                  associated data DOMAIN || bytes [0, 12 + n)
    14+n+m  12    nonce
    ...           AES-256-GCM(backup key, state bytes), associated data =
                  every byte before the nonce

Only the 32-byte key goes through the HSM, so a large state never has to
(a hardware or remote HSM may limit its input size).
"""

import os
import struct
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from minkms.errors import KMSError
from minkms.storage.errors import BackupError

if TYPE_CHECKING:
    from minkms.hsm import SoftHSM

MAGIC = b"MINKMSBK"
FORMAT_VERSION = 1
DOMAIN = b"minkms/backup/v1"

_PREFIX = struct.Struct(">8sHH")
_U16 = struct.Struct(">H")
_NONCE = 12


def seal_backup(hsm: "SoftHSM", cluster_id: str, state_bytes: bytes) -> bytes:
    """Seal C{state_bytes} so that only a holder of C{hsm}'s key can open it."""
    cluster = cluster_id.encode("utf-8")
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(cluster)) + cluster
    key = AESGCM.generate_key(bit_length=256)
    sealed_key = hsm.seal(key, DOMAIN + head)
    head += _U16.pack(len(sealed_key)) + sealed_key
    nonce = os.urandom(_NONCE)
    return head + nonce + AESGCM(key).encrypt(nonce, state_bytes, head)


def _parse(blob: bytes) -> tuple[str, bytes, bytes, bytes, bytes]:
    if len(blob) < _PREFIX.size or blob[:8] != MAGIC:
        raise BackupError("not a minkms backup")
    _, version, n = _PREFIX.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise BackupError(f"unsupported backup format version {version}")
    pos = _PREFIX.size + n
    if len(blob) < pos + 2:
        raise BackupError("backup is truncated")
    (m,) = _U16.unpack_from(blob, pos)
    key_at = pos + 2
    body_at = key_at + m + _NONCE
    if len(blob) < body_at + 16:
        raise BackupError("backup is truncated")
    try:
        cluster_id = blob[_PREFIX.size : pos].decode("utf-8")
    except UnicodeDecodeError:
        raise BackupError("backup is corrupt") from None
    return (
        cluster_id,
        blob[:pos],
        blob[key_at : key_at + m],
        blob[: key_at + m],
        blob[key_at + m :],
    )


def backup_cluster_id(blob: bytes) -> str:
    """The cluster ID a backup names (unauthenticated until L{open_backup})."""
    return _parse(blob)[0]


def open_backup(hsm: "SoftHSM", blob: bytes) -> bytes:
    """
    The state bytes sealed in C{blob}.

    @raise BackupError: with a one-line reason: not a backup, truncated,
        made with another HSM key, or damaged.
    """
    _, key_aad, sealed_key, head, rest = _parse(blob)
    try:
        key = hsm.unseal(sealed_key, DOMAIN + key_aad)
    except KMSError:
        raise BackupError("cannot open backup: it was sealed with a different HSM key, or is corrupt") from None
    try:
        return AESGCM(key).decrypt(rest[:_NONCE], rest[_NONCE:], head)
    except InvalidTag:
        raise BackupError("backup is corrupt") from None
