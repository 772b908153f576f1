"""
The C{/v1/kms} frame codec: the examples of spec sections 4.2 and 4.4, the
server's refusals of bad bodies (all 400 with a specific message), and the
client-side decoding rules of kms-go.
"""

import struct

from twisted.trial.unittest import SynchronousTestCase

from minkms.errors import KMSError
from minkms.wire import frames, kms_pb2 as pb
from minkms.wire.commands import (
    BY_CODE,
    CLUSTER_ADDNODE,
    CLUSTER_STATUS,
    ENCLAVE_CREATE,
    ENCLAVE_LIST,
    ENCLAVE_STATUS,
    IDENTITY_CREATE,
    IDENTITY_LIST,
    KEY_CREATE,
    KEY_DECRYPT,
    KEY_DELETE,
    KEY_ENCRYPT,
    KEY_GENERATE,
    KEY_IMPORT,
    KEY_LIST,
    KEY_MAC,
    KEY_STATUS,
    POLICY_CREATE,
)

IDENTITY = "h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw"


def hexbytes(text):
    """Bytes from the spec's spaced hex."""
    return bytes.fromhex(text.replace(" ", ""))


def frame(code, payload=b""):
    """One frame, built by hand rather than by the code under test."""
    return struct.pack(">HI", code, len(payload)) + payload


class SpecExamplesTests(SynchronousTestCase):
    """The hex examples of spec sections 4.2 and 4.4, both directions."""

    EXAMPLES = [
        (CLUSTER_STATUS, [pb.ClusterStatusRequest()], "00 03 00 00 00 00"),
        (ENCLAVE_CREATE, [pb.CreateEnclaveRequest(Name="minio")], "00 65 00 00 00 07 0a 05 6d 69 6e 69 6f"),
        (
            KEY_GENERATE,
            [pb.GenerateKeyRequest(Name="my-key", Length=32)],
            "00 cf 00 00 00 0a 0a 06 6d 79 2d 6b 65 79 20 20",
        ),
        (
            KEY_STATUS,
            [pb.KeyStatusRequest(Name="k1"), pb.KeyStatusRequest(Name="k2", Version=3)],
            "00 cc 00 00 00 04 0a 02 6b 31 00 cc 00 00 00 06 0a 02 6b 32 10 03",
        ),
    ]

    def test_request_examples_encode(self):
        """Our client encodes the section 4.2 examples byte for byte."""
        for code, messages, text in self.EXAMPLES:
            self.assertEqual(frames.encode_request(code, messages), hexbytes(text))

    def test_request_examples_decode(self):
        """Our server decodes the section 4.2 examples to their messages."""
        for code, messages, text in self.EXAMPLES:
            decoded = frames.decode_request(hexbytes(text))
            self.assertEqual([c.code for c, _ in decoded], [code] * len(messages))
            self.assertEqual([m for _, m in decoded], messages)

    def _key_status(self):
        status = pb.KeyStatusResponse(Name="my-key", Version=1, Type="AES256", CreatedBy=IDENTITY)
        status.CreatedAt.seconds = 1700000000
        return status

    def test_response_example(self):
        """
        Section 4.4: a KeyStatusResponse frame, byte for byte up to the
        identity, then the 46 ASCII bytes of the identity.
        """
        body = frames.encode_response(KEY_STATUS, [self._key_status()])
        head = hexbytes(
            "00 cc 00 00 00 4a 0a 06 6d 79 2d 6b 65 79 10 01 1a 06 41 45 53 32 35 36"
            " 22 06 08 80 e2 cf aa 06 2a 2e 68 31 3a"
        )
        self.assertEqual(body[: len(head)], head)
        self.assertEqual(body[len(head) - 3 :], IDENTITY.encode("ascii"))
        self.assertEqual(len(body), 6 + 0x4A)

    def test_response_example_decodes(self):
        """Our client decodes the section 4.4 frame back."""
        body = frames.encode_response(KEY_STATUS, [self._key_status()])
        self.assertEqual(frames.decode_response(KEY_STATUS, body), [self._key_status()])


class BadRequestTests(SynchronousTestCase):
    """Every malformed body is a 400 naming what is wrong (spec 4.3)."""

    def assertRefused(self, body, message, **kwargs):
        """decode_request raises exactly KMSError(400, message)."""
        error = self.assertRaises(KMSError, frames.decode_request, body, **kwargs)
        self.assertEqual((error.status, error.message), (400, message))

    def test_empty_body(self):
        """No frame at all."""
        self.assertRefused(b"", "empty request body: expected at least one command frame")

    def test_truncated_header(self):
        """Fewer than 6 bytes, at the start or after a complete frame."""
        self.assertRefused(
            b"\x00\xcc\x00\x00\x00",
            "truncated command frame 1: 5 bytes left, a frame header needs 6",
        )
        self.assertRefused(
            frame(KEY_STATUS, b"\x0a\x01k") + b"\x00\xcc",
            "truncated command frame 2: 2 bytes left, a frame header needs 6",
        )

    def test_length_beyond_body(self):
        """A length larger than what is left."""
        self.assertRefused(
            hexbytes("00 cc 00 00 00 09 0a 02 6b 31"),
            "truncated command frame 1: length 9 exceeds the 4 bytes left in the body",
        )
        self.assertRefused(
            hexbytes("00 cc ff ff ff ff"),
            "truncated command frame 1: length 4294967295 exceeds the 0 bytes left in the body",
        )

    def test_unknown_code(self):
        """A code outside the command table, first or later."""
        self.assertRefused(frame(999), "unknown command code 999")
        self.assertRefused(frame(0), "unknown command code 0")
        self.assertRefused(frame(KEY_STATUS) + frame(7), "unknown command code 7")

    def test_invalid_protobuf(self):
        """A payload that is not the command's message."""
        self.assertRefused(
            frame(KEY_STATUS, b"\x0a\x05ab"),
            "invalid KEY:STATUS message in frame 1: not a valid KeyStatusRequest",
        )
        self.assertRefused(
            frame(KEY_ENCRYPT, b"\x0a\x01k") + frame(KEY_ENCRYPT, b"\xff"),
            "invalid KEY:ENCRYPT message in frame 2: not a valid EncryptRequest",
        )

    def test_invalid_utf8_string(self):
        """A proto3 string field holding invalid UTF-8 is malformed too."""
        self.assertRefused(
            frame(KEY_CREATE, b"\x0a\x02\xc3\x28"),
            "invalid KEY:CREATE message in frame 1: not a valid CreateKeyRequest",
        )

    def test_mixed_codes(self):
        """Two known codes in one body."""
        self.assertRefused(
            frame(KEY_STATUS, b"\x0a\x01a") + frame(KEY_ENCRYPT, b"\x0a\x01a"),
            "mixed commands in one request: frame 2 is KEY:ENCRYPT, frame 1 is KEY:STATUS",
        )
        self.assertRefused(
            frame(KEY_CREATE, b"\x0a\x01a") + frame(KEY_DELETE, b"\x0a\x01a"),
            "mixed commands in one request: frame 2 is KEY:DELETE, frame 1 is KEY:CREATE",
        )

    def test_batch_of_non_batch_command(self):
        """Writes, CLUSTER:STATUS and LIST commands take one frame only."""
        single = (
            CLUSTER_ADDNODE,
            CLUSTER_STATUS,
            ENCLAVE_CREATE,
            ENCLAVE_LIST,
            KEY_CREATE,
            KEY_DELETE,
            KEY_IMPORT,
            KEY_LIST,
            POLICY_CREATE,
            IDENTITY_CREATE,
            IDENTITY_LIST,
        )
        for code in single:
            name = BY_CODE[code].name
            self.assertRefused(
                frame(code) + frame(code),
                f"{name} takes exactly one command frame, not a batch",
            )

    def test_too_many_frames(self):
        """More frames than the limit, default 1000 or as given."""
        self.assertEqual(frames.MAX_FRAMES, 1000)
        one = frame(KEY_STATUS, b"\x0a\x01k")
        self.assertEqual(len(frames.decode_request(one * 1000)), 1000)
        self.assertRefused(one * 1001, "too many command frames: at most 1000 per request")
        self.assertRefused(one * 3, "too many command frames: at most 2 per request", max_frames=2)

    def test_framing_checked_before_code(self):
        """A truncated frame is reported as such even if its code is unknown."""
        self.assertRefused(
            hexbytes("03 e7 00 00 00 05 0a"),
            "truncated command frame 1: length 5 exceeds the 1 bytes left in the body",
        )


class DecodeRequestTests(SynchronousTestCase):
    """What the server accepts."""

    def test_every_command(self):
        """Each code decodes to its command and request type, empty or not."""
        for code, command in BY_CODE.items():
            ((got, message),) = frames.decode_request(frame(code))
            self.assertIs(got, command)
            self.assertIsInstance(message, command.request)

    def test_batch_in_order(self):
        """A batch keeps its order."""
        names = [f"k{i}" for i in range(5)]
        body = b"".join(frame(KEY_DECRYPT, pb.DecryptRequest(Name=n).SerializeToString()) for n in names)
        self.assertEqual([m.Name for _, m in frames.decode_request(body)], names)

    def test_unknown_fields_ignored(self):
        """Unknown fields (from newer clients) are skipped."""
        ((_, message),) = frames.decode_request(frame(KEY_STATUS, b"\x0a\x01k\xf8\x01\x07"))
        self.assertEqual(message.Name, "k")

    def test_enclave_status_as_create_enclave(self):
        """kms-go encodes ENCLAVE:STATUS with CreateEnclaveRequest: same bytes."""
        payload = pb.CreateEnclaveRequest(Name="e1").SerializeToString()
        ((_, message),) = frames.decode_request(frame(ENCLAVE_STATUS, payload))
        self.assertEqual(message, pb.EnclaveStatusRequest(Name="e1"))

    def test_memoryview_body(self):
        """Any bytes-like body works."""
        body = bytearray(frame(KEY_STATUS, b"\x0a\x01k"))
        self.assertEqual(frames.decode_request(memoryview(body))[0][1].Name, "k")


class EncodeTests(SynchronousTestCase):
    """Our client's request encoder and the server's response encoder."""

    def test_write_response_zero_frames(self):
        """None items become zero-length frames: the write reply."""
        self.assertEqual(frames.encode_response(KEY_CREATE, [None]), hexbytes("00 c9 00 00 00 00"))
        self.assertEqual(frames.zero_frame(POLICY_CREATE), hexbytes("01 2d 00 00 00 00"))
        self.assertEqual(frames.encode_response(KEY_DELETE, []), b"")

    def test_response_batch(self):
        """One frame per message, in order."""
        body = frames.encode_response(KEY_ENCRYPT, [pb.EncryptResponse(Version=1), pb.EncryptResponse(Version=2)])
        self.assertEqual(body, frame(KEY_ENCRYPT, b"\x08\x01") + frame(KEY_ENCRYPT, b"\x08\x02"))

    def test_response_type_checked(self):
        """A message of the wrong type, or one for a write, is a bug."""
        self.assertRaises(TypeError, frames.encode_response, 205, [pb.DecryptResponse()])
        self.assertRaises(TypeError, frames.encode_response, 201, [pb.CreateKeyRequest()])

    def test_request_rules(self):
        """Our client sends what kms-go sends, nothing else."""
        self.assertRaises(ValueError, frames.encode_request, 204, [])
        self.assertRaises(ValueError, frames.encode_request, 201, [pb.CreateKeyRequest(), pb.CreateKeyRequest()])
        self.assertRaises(TypeError, frames.encode_request, 204, [pb.EncryptRequest()])
        self.assertRaises(ValueError, frames.encode_request, 999, [pb.ListRequest()])

    def test_round_trip(self):
        """decode_request(encode_request(x)) is x."""
        messages = [pb.MACRequest(Name="a", Message=b"\x00" * 300), pb.MACRequest(Name="b")]
        body = frames.encode_request(KEY_MAC, messages)
        self.assertEqual([m for _, m in frames.decode_request(body)], messages)


class DecodeResponseTests(SynchronousTestCase):
    """Our client's reading of response bodies, as kms-go reads them."""

    def test_write_body_ignored(self):
        """kms-go never reads a write reply: any body gives []."""
        self.assertEqual(frames.decode_response(KEY_CREATE, b""), [])
        self.assertEqual(frames.decode_response(KEY_CREATE, b"garbage"), [])
        self.assertEqual(frames.decode_response(KEY_CREATE, frames.zero_frame(KEY_CREATE)), [])

    def test_code_must_match(self):
        """A frame of another command is an error."""
        error = self.assertRaises(
            frames.FrameError, frames.decode_response, KEY_STATUS, frame(KEY_ENCRYPT, b"\x08\x01")
        )
        self.assertEqual(str(error), "received command KEY:ENCRYPT, expected KEY:STATUS")
        error = self.assertRaises(frames.FrameError, frames.decode_response, KEY_STATUS, frame(999))
        self.assertEqual(str(error), "received command !INVALID:999, expected KEY:STATUS")

    def test_trailing_partial_frame(self):
        """Bytes after the last complete frame are an error."""
        body = frame(KEY_STATUS, b"\x0a\x01k") + b"\x00\xcc\x00"
        error = self.assertRaises(frames.FrameError, frames.decode_response, KEY_STATUS, body)
        self.assertEqual(
            str(error),
            "KEY:STATUS: truncated response frame 2: 3 bytes left, a frame header needs 6",
        )
        body = frame(KEY_STATUS, b"\x0a\x01k") + hexbytes("00 cc 00 00 00 05 0a")
        self.assertRaises(frames.FrameError, frames.decode_response, KEY_STATUS, body)

    def test_list_exactly_one_frame(self):
        """A LIST reply is one frame and nothing after it."""
        one = frame(KEY_LIST, b"\x12\x01x")
        self.assertEqual(frames.decode_response(KEY_LIST, one), [pb.ListKeysResponse(ContinueAt="x")])
        error = self.assertRaises(frames.FrameError, frames.decode_response, KEY_LIST, one + one)
        self.assertEqual(str(error), "KEY:LIST: response body contains additional data")
        error = self.assertRaises(frames.FrameError, frames.decode_response, KEY_LIST, one + b"\x00")
        self.assertEqual(str(error), "KEY:LIST: response body contains additional data")
        error = self.assertRaises(frames.FrameError, frames.decode_response, KEY_LIST, b"")
        self.assertEqual(str(error), "KEY:LIST: empty response body")

    def test_batch_reads_until_end(self):
        """A batch reply yields every frame; an empty body yields none."""
        body = frame(KEY_DECRYPT, b"\x0a\x01a") + frame(KEY_DECRYPT, b"")
        self.assertEqual(
            frames.decode_response(KEY_DECRYPT, body),
            [pb.DecryptResponse(Plaintext=b"a"), pb.DecryptResponse()],
        )
        self.assertEqual(frames.decode_response(KEY_DECRYPT, b""), [])

    def test_expect(self):
        """With expect, the frame count must match."""
        body = frame(KEY_DECRYPT, b"")
        self.assertEqual(len(frames.decode_response(KEY_DECRYPT, body, expect=1)), 1)
        error = self.assertRaises(frames.FrameError, frames.decode_response, KEY_DECRYPT, body, expect=2)
        self.assertEqual(str(error), "KEY:DECRYPT: expected 2 response frames, got 1")

    def test_invalid_protobuf(self):
        """A payload that does not parse is a FrameError, not a KMSError."""
        self.assertRaises(frames.FrameError, frames.decode_response, KEY_STATUS, frame(KEY_STATUS, b"\x0a\x09"))


class DecodeMessageTests(SynchronousTestCase):
    """Plain (unframed) request bodies."""

    def test_valid(self):
        """A LogRequest body parses."""
        body = pb.LogRequest(Level=-4, Message="x").SerializeToString()
        self.assertEqual(frames.decode_message(pb.LogRequest, body).Level, -4)

    def test_invalid(self):
        """A malformed body is a 400."""
        error = self.assertRaises(KMSError, frames.decode_message, pb.LogRequest, b"\x12\x05")
        self.assertEqual(error, KMSError(400, "invalid LogRequest: malformed protobuf"))
