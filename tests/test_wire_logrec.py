"""
Log stream records (spec sections 9 and 11): the example record, the
legacy field 5, and the 4096-byte limit.
"""

import datetime

from google.protobuf import timestamp_pb2
from twisted.trial.unittest import SynchronousTestCase

from minkms.wire import kms_pb2 as pb
from minkms.wire.frames import FrameError
from minkms.wire.logrec import MAX_RECORD, decode_log_records, encode_log_record

EXAMPLE = bytes.fromhex("0000000f120608 80e2cfaa061a0568656c6c6f".replace(" ", ""))
WHEN = datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.timezone.utc)
LEGACY = bytes.fromhex("2a0b2209") + b"127.0.0.1"


class EncodeTests(SynchronousTestCase):
    """encode_log_record."""

    def test_spec_example(self):
        """Section 9's record, byte for byte, without the legacy field."""
        self.assertEqual(encode_log_record(0, WHEN, "hello", legacy=False), EXAMPLE)

    def test_legacy_field(self):
        """By default field 5 carries Request{IP: 127.0.0.1} after the rest."""
        data = encode_log_record(0, WHEN, "hello")
        self.assertEqual(data, bytes.fromhex("0000001c") + EXAMPLE[4:] + LEGACY)
        ((record,), rest) = decode_log_records(data)
        self.assertEqual(rest, b"")
        self.assertEqual(record.Request.IP, "127.0.0.1")
        self.assertEqual((record.Request.Method, record.Request.Path, record.Request.Identity), ("", "", ""))

    def test_other_ip(self):
        """The originating IP may be given instead."""
        ((record,), _) = decode_log_records(encode_log_record(0, WHEN, "x", ip="10.1.2.3"))
        self.assertEqual(record.Request.IP, "10.1.2.3")

    def test_time_forms(self):
        """datetime (aware or naive UTC), Timestamp and Unix seconds all work."""
        stamp = timestamp_pb2.Timestamp(seconds=1700000000)
        for when in (WHEN, WHEN.replace(tzinfo=None), stamp, 1700000000, 1700000000.0):
            self.assertEqual(encode_log_record(0, when, "hello", legacy=False), EXAMPLE, when)

    def test_level_and_trace(self):
        """Negative levels (zig-zag) and stack frames from tuples or messages."""
        frame = pb.LogRecord.StackFrame(Function="f", File="a.py", Line=3)
        data = encode_log_record(-4, WHEN, "m", [("g", "b.py", 9), frame])
        ((record,), _) = decode_log_records(data)
        self.assertEqual(record.Level, -4)
        self.assertEqual([(f.Function, f.File, f.Line) for f in record.Trace], [("g", "b.py", 9), ("f", "a.py", 3)])

    def test_long_trace_dropped_first(self):
        """Outer trace frames go first; the message stays whole if it can."""
        trace = [(f"function_{i}", "x" * 200, i) for i in range(50)]
        data = encode_log_record(8, WHEN, "boom", trace)
        self.assertLessEqual(len(data) - 4, MAX_RECORD)
        ((record,), _) = decode_log_records(data)
        self.assertEqual(record.Message, "boom")
        self.assertTrue(0 < len(record.Trace) < 50)
        self.assertEqual(record.Trace[0].Function, "function_0")
        self.assertEqual(record.Request.IP, "127.0.0.1")

    def test_long_message_cut(self):
        """A message too long is cut to fit, exactly at the limit."""
        data = encode_log_record(0, WHEN, "y" * 10000, [("f", "g", 1)])
        self.assertEqual(len(data) - 4, MAX_RECORD)
        ((record,), _) = decode_log_records(data)
        self.assertEqual(len(record.Trace), 0)
        self.assertTrue(record.Message.startswith("yyy"))
        self.assertEqual(record.Request.IP, "127.0.0.1")

    def test_cut_on_character_boundary(self):
        """Cutting never splits a UTF-8 character."""
        for pad in range(4):
            data = encode_log_record(0, WHEN, "a" * pad + "€" * 3000)
            self.assertLessEqual(len(data) - 4, MAX_RECORD)
            ((record,), _) = decode_log_records(data)
            self.assertEqual(set(record.Message[pad:]), {"€"})


class DecodeTests(SynchronousTestCase):
    """decode_log_records, for our client."""

    def test_partial(self):
        """Incomplete records stay in the rest."""
        data = EXAMPLE * 2
        self.assertEqual(decode_log_records(data[:-3])[1], data[19:-3])
        records, rest = decode_log_records(data)
        self.assertEqual((len(records), rest), (2, b""))
        self.assertEqual(decode_log_records(b"\x00\x00"), ([], b"\x00\x00"))

    def test_too_large(self):
        """A length beyond 4096 ends the stream, as in kms-go."""
        error = self.assertRaises(FrameError, decode_log_records, b"\x00\x00\x10\x01")
        self.assertEqual(str(error), "log record too large: 4097 bytes")
