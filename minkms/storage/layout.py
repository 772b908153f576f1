"""
The byte layout of C{kms.db}: a header, then sealed record frames.

Pure: functions of their inputs (plus fresh random nonces), no files, no
Twisted.  All integers are big-endian.

Header::

    offset  size  field
    0       8     magic "MINKMSDB"
    8       2     format version (1)
    10      2     body length B
    12      B     body:
                    16     file ID: random, new for every file written whole
                    2 + n  cluster ID (UTF-8, a UUID string), u16 length first
                    8      node ID
                    2 + m  sealed REK, u16 length first: the HSM's seal of
                           the 32-byte root encryption key, with associated
                           data DOMAIN_REK || magic || version || file ID ||
                           cluster ID field || node ID (every other field)
    12 + B  4     CRC-32 of bytes [0, 12 + B)

Frame (one per record, straight after the header or the previous frame)::

    0       4     marker 0xEA "MKR"
    4       4     L, the length of the sealed payload
    8       8     batch start: the file offset of the first frame written by
                  the same write (group commit) as this one
    16      4     CRC-32 of the sealed payload
    20      4     CRC-32 of bytes 0..20 of this frame
    24      L     sealed payload: nonce (12) || AES-256-GCM ciphertext || tag
                  (16), key = REK, plaintext = L{minkms.storage.records},
                  associated data = DOMAIN_RECORD || file ID || frame offset
                  u64 || L u32 || batch start u64

Binding the file ID and the offset into the associated data means a frame
opens only where it was written: copied to another offset, reordered, or
moved from an older generation of C{kms.db} (compaction writes a new file
ID), it fails authentication.  The two CRCs are there to tell an unfinished
write (bad checksum) from tampering or a wrong key (good checksum, bad tag);
L{minkms.storage.recovery} relies on that distinction and on the batch
start.
"""

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from minkms.storage.errors import CorruptVolume
from minkms.storage.records import (
    Record,
    RecordDecodeError,
    decode_record,
    encode_record,
    encode_record_parts,
    record_size,
)

if TYPE_CHECKING:
    from minkms.hsm import SoftHSM
    from minkms.storage.window import FileData

MAGIC = b"MINKMSDB"
FORMAT_VERSION = 1
FILE_ID_SIZE = 16
REK_SIZE = 32

DOMAIN_REK = b"minkms/kms.db/rek/v1"
DOMAIN_RECORD = b"minkms/kms.db/record/v1"

MARKER = b"\xeaMKR"
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_PAYLOAD = 2**31
"""The largest sealed payload a frame may carry (a large snapshot fits)."""

_PREFIX = struct.Struct(">8sHH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_FRAME_FIELDS = struct.Struct(">4sIQI")
_AAD_TAIL = struct.Struct(">QIQ")
FRAME_HEADER_SIZE = _FRAME_FIELDS.size + 4
PIECE_SIZE = 2**20
"""Bytes of frames L{RecordSealer.file_pieces} gathers into one write."""


@attrs.frozen
class Header:
    """The decoded header of one C{kms.db} file."""

    file_id: bytes
    cluster_id: str
    node_id: int
    sealed_rek: bytes


def _header_fields(file_id: bytes, cluster_id: str, node_id: int) -> bytes:
    cluster = cluster_id.encode("utf-8")
    return file_id + _U16.pack(len(cluster)) + cluster + _U64.pack(node_id)


def rek_associated_data(file_id: bytes, cluster_id: str, node_id: int) -> bytes:
    """What the HSM binds the sealed REK to: every other header field."""
    fields = _header_fields(file_id, cluster_id, node_id)
    return DOMAIN_REK + MAGIC + _U16.pack(FORMAT_VERSION) + fields


def new_header(hsm: "SoftHSM", rek: bytes, cluster_id: str, node_id: int) -> Header:
    """
    A header for a new file: a fresh file ID and C{rek} sealed by C{hsm}
    to this header's fields.
    """
    file_id = os.urandom(FILE_ID_SIZE)
    sealed = hsm.seal(rek, rek_associated_data(file_id, cluster_id, node_id))
    return Header(file_id, cluster_id, node_id, sealed)


def encode_header(header: Header) -> bytes:
    """The header bytes, checksum included."""
    body = (
        _header_fields(header.file_id, header.cluster_id, header.node_id)
        + _U16.pack(len(header.sealed_rek))
        + header.sealed_rek
    )
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    return head + _U32.pack(zlib.crc32(head))


def decode_header(data: "FileData") -> tuple[Header, int]:
    """
    Parse the header at the start of C{data} (bytes, or a
    L{minkms.storage.window.FileWindow}).

    @return: the header and the offset of the first frame.
    @raise CorruptVolume: not a minkms volume, unknown version, or damaged.
    """
    if len(data) < _PREFIX.size:
        if MAGIC.startswith(data[: len(MAGIC)]) and data:
            raise CorruptVolume(0, "truncated header")
        raise CorruptVolume(0, "not a minkms volume (bad magic)")
    magic, version, body_len = _PREFIX.unpack(data[: _PREFIX.size])
    if magic != MAGIC:
        raise CorruptVolume(0, "not a minkms volume (bad magic)")
    if version != FORMAT_VERSION:
        raise CorruptVolume(8, f"unsupported format version {version} (this minkms reads {FORMAT_VERSION})")
    end = _PREFIX.size + body_len
    if len(data) < end + 4:
        raise CorruptVolume(0, "truncated header")
    (crc,) = _U32.unpack(data[end : end + 4])
    if crc != zlib.crc32(data[:end]):
        raise CorruptVolume(0, "header checksum mismatch")
    try:
        return _decode_body(data[_PREFIX.size : end]), end + 4
    except (ValueError, struct.error):
        raise CorruptVolume(0, "malformed header") from None


def _decode_body(body: bytes) -> Header:
    pos = FILE_ID_SIZE
    file_id = body[:pos]
    (n,) = _U16.unpack_from(body, pos)
    pos += 2
    cluster_id = body[pos : pos + n].decode("utf-8")
    pos += n
    (node_id,) = _U64.unpack_from(body, pos)
    pos += 8
    (m,) = _U16.unpack_from(body, pos)
    pos += 2
    sealed = body[pos : pos + m]
    if len(file_id) != FILE_ID_SIZE or len(sealed) != m or pos + m != len(body):
        raise ValueError("header fields do not fill the body")
    return Header(file_id, cluster_id, node_id, sealed)


@attrs.frozen
class Frame:
    """A frame that passed every check, with its record."""

    offset: int
    end: int
    batch_start: int
    record: Record


@attrs.frozen
class Unfinished:
    """
    A frame that fails a checksum or stops short of the end of the data:
    what an interrupted write leaves (or damage; the scan decides).
    """

    offset: int
    reason: str


FRAME_OVERHEAD = _FRAME_FIELDS.size + _U32.size + NONCE_SIZE + TAG_SIZE
"""Bytes a frame adds to its record's plaintext."""


def sealed_size(records: Iterable[Record]) -> int:
    """The bytes C{records} take as frames, without sealing them."""
    return sum(FRAME_OVERHEAD + record_size(record) for record in records)


class RecordSealer:
    """
    Seals records into frames and opens frames, for one file (one REK and
    one file ID).
    """

    def __init__(self, rek: bytes, file_id: bytes) -> None:
        if len(rek) != REK_SIZE:
            raise ValueError("root encryption key must be 32 bytes")
        self._aead = AESGCM(rek)
        self._rek = rek
        self.file_id = file_id
        self._aad_head = DOMAIN_RECORD + file_id

    def frame(self, offset: int, batch_start: int, plaintext: bytes) -> bytes:
        """The frame for C{plaintext} written at file offset C{offset}."""
        length = NONCE_SIZE + len(plaintext) + TAG_SIZE
        if length > MAX_PAYLOAD:
            raise ValueError("record too large")
        nonce = os.urandom(NONCE_SIZE)
        aad = self._aad_head + _AAD_TAIL.pack(offset, length, batch_start)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, aad)
        fields = _FRAME_FIELDS.pack(MARKER, length, batch_start, zlib.crc32(sealed))
        return fields + _U32.pack(zlib.crc32(fields)) + sealed

    def encode_batch(self, start: int, records: Iterable[Record]) -> bytes:
        """
        The frames for C{records} written by one write at offset C{start},
        all carrying C{start} as their batch start.
        """
        parts = []
        offset = start
        for record in records:
            frame = self.frame(offset, start, encode_record(record))
            parts.append(frame)
            offset += len(frame)
        return b"".join(parts)

    def file_pieces(
        self, head: bytes, records: Iterable[Record], piece_size: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """
        A whole new file, C{head} (its encoded header) followed by the
        frames for C{records} written as one batch, as C{(offset, bytes)}
        pieces to write in any order: small frames gathered up to
        C{piece_size} bytes, and a frame larger than that sealed in pieces
        of about that size, so that no piece, and no copy of a record, is
        ever much larger than C{piece_size}.
        """
        piece_size = piece_size or PIECE_SIZE
        gathered: list[bytes] = [head]
        gathered_at = 0
        offset = start = len(head)
        for record in records:
            size = FRAME_OVERHEAD + record_size(record)
            if size <= piece_size:
                if offset + size - gathered_at > piece_size and gathered:
                    yield gathered_at, b"".join(gathered)
                    gathered, gathered_at = [], offset
                gathered.append(self.frame(offset, start, encode_record(record)))
            else:
                if gathered:
                    yield gathered_at, b"".join(gathered)
                    gathered = []
                yield from self._large_frame(offset, start, record, piece_size)
                gathered_at = offset + size
            offset += size
        if gathered:
            yield gathered_at, b"".join(gathered)

    def _large_frame(
        self, offset: int, batch_start: int, record: Record, piece_size: int
    ) -> Iterator[tuple[int, bytes]]:
        """
        One frame as pieces: the payload first, encrypted and checksummed
        as it goes, then the frame header, which carries the payload's CRC.
        """
        head, body = encode_record_parts(record)
        length = NONCE_SIZE + len(head) + len(body) + TAG_SIZE
        if length > MAX_PAYLOAD:
            raise ValueError("record too large")
        nonce = os.urandom(NONCE_SIZE)
        encryptor = Cipher(algorithms.AES(self._rek), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(self._aad_head + _AAD_TAIL.pack(offset, length, batch_start))
        at = offset + FRAME_HEADER_SIZE
        crc = zlib.crc32(nonce)
        yield at, nonce
        at += NONCE_SIZE
        view = memoryview(body)
        for piece in [head] + [view[i : i + piece_size] for i in range(0, len(body), piece_size)]:
            sealed = encryptor.update(piece)
            crc = zlib.crc32(sealed, crc)
            yield at, sealed
            at += len(sealed)
        encryptor.finalize()
        crc = zlib.crc32(encryptor.tag, crc)
        yield at, encryptor.tag
        fields = _FRAME_FIELDS.pack(MARKER, length, batch_start, crc)
        yield offset, fields + _U32.pack(zlib.crc32(fields))

    def read(self, data: "FileData", offset: int) -> Frame | Unfinished:
        """
        Read the frame at C{offset} of C{data}: the whole file, as bytes
        or a L{minkms.storage.window.FileWindow}.

        @raise CorruptVolume: the checksums hold but the frame cannot be
            valid: impossible length or batch start, failed authentication
            (wrong key, moved or replayed bytes), or an unknown record.
        """
        if len(data) - offset < FRAME_HEADER_SIZE:
            return Unfinished(offset, "incomplete record header")
        frame_header = data[offset : offset + FRAME_HEADER_SIZE]
        fields = frame_header[: _FRAME_FIELDS.size]
        marker, length, batch_start, payload_crc = _FRAME_FIELDS.unpack(fields)
        if marker != MARKER:
            return Unfinished(offset, "bad record marker")
        (header_crc,) = _U32.unpack_from(frame_header, _FRAME_FIELDS.size)
        if header_crc != zlib.crc32(fields):
            return Unfinished(offset, "record header checksum mismatch")
        if length <= NONCE_SIZE + TAG_SIZE or length > MAX_PAYLOAD:
            raise CorruptVolume(offset, "impossible record length")
        if batch_start > offset:
            raise CorruptVolume(offset, "record claims a batch after itself")
        start = offset + FRAME_HEADER_SIZE
        end = start + length
        if end > len(data):
            return Unfinished(offset, "incomplete record payload")
        sealed = data[start:end]
        if zlib.crc32(sealed) != payload_crc:
            return Unfinished(offset, "record checksum mismatch")
        aad = self._aad_head + _AAD_TAIL.pack(offset, length, batch_start)
        try:
            plaintext = self._aead.decrypt(sealed[:NONCE_SIZE], memoryview(sealed)[NONCE_SIZE:], aad)
        except InvalidTag:
            raise CorruptVolume(
                offset,
                "record fails authentication (wrong key, or bytes moved from another position or file)",
            ) from None
        del sealed  # a snapshot is held twice at most while it is decoded, not three times
        try:
            record = decode_record(plaintext)
        except RecordDecodeError as e:
            raise CorruptVolume(offset, f"undecodable record: {e}") from None
        return Frame(offset, end, batch_start, record)
