"""
Tests of the Raft wire codec and of the cluster configuration encoding.
"""

import attrs
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from minkms.raft import codec
from minkms.raft.config import (
    EMPTY_CONFIG,
    ClusterConfig,
    decode_config,
    encode_config,
    single_node_config,
)
from minkms.raft.core import RaftOptions
from minkms.raft.messages import (
    Append,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from minkms.raft.types import ENTRY_CONFIG, ENTRY_NOOP, Entry, SnapshotMeta

EXAMPLES = [
    VoteRequest(1, 2, 7, last_index=10, last_term=6, pre=True, transfer=False),
    VoteRequest(1, 2, 7, last_index=10, last_term=6, pre=False, transfer=True),
    VoteResponse(2, 1, 7, pre=True, granted=True),
    Append(
        1,
        2,
        7,
        prev_index=9,
        prev_term=6,
        commit=8,
        entries=(Entry(10, 7, ENTRY_NOOP), Entry(11, 7, 0, b"\x00data")),
    ),
    Append(1, 2, 7),
    AppendResponse(2, 1, 7, index=9, reject=True, hint_index=4, hint_term=3),
    Heartbeat(1, 2, 7, commit=8, context=3),
    HeartbeatResponse(2, 1, 7, context=3),
    InstallSnapshot(1, 2, 7, meta=SnapshotMeta(9, 6, b"{}"), offset=32768, data=b"chunk", done=True),
    SnapshotResponse(2, 1, 7, index=9, next_offset=32773),
    TimeoutNow(1, 2, 7),
    ReadIndexRequest(3, 1, 0, request_id=b"req-1"),
    ReadIndexResponse(1, 3, 7, request_id=b"req-1", index=8),
]


class CodecTests(SynchronousTestCase):
    """encode/decode of every message kind."""

    def test_round_trip(self):
        """Every message decodes to an equal message."""
        for message in EXAMPLES:
            self.assertEqual(codec.decode(codec.encode(message)), message)

    def test_deterministic(self):
        """Equal messages encode to equal bytes, different ones to different bytes."""
        encoded = [codec.encode(m) for m in EXAMPLES]
        self.assertEqual(encoded, [codec.encode(m) for m in EXAMPLES])
        self.assertEqual(len(set(encoded)), len(encoded))

    def test_rejects_malformed(self):
        """Truncated data, trailing bytes and unknown kinds are errors."""
        data = codec.encode(EXAMPLES[3])
        self.assertRaises(codec.CodecError, codec.decode, data[:-1])
        self.assertRaises(codec.CodecError, codec.decode, data + b"\x00")
        self.assertRaises(codec.CodecError, codec.decode, b"\xff" + data[1:])
        self.assertRaises(codec.CodecError, codec.decode, b"")

    def test_append_size_formula(self):
        """append_size predicts the encoded size of an Append exactly."""
        entries = tuple(Entry(i, 3, 0, b"x" * i) for i in range(1, 20))
        message = Append(1, 2, 3, prev_index=0, prev_term=0, commit=0, entries=entries)
        self.assertEqual(
            len(codec.encode(message)),
            codec.append_size(sum(len(e.data) for e in entries), len(entries)),
        )

    def test_largest_messages_fit_amp(self):
        """A full batch Append and a full snapshot chunk stay under the limit."""
        options = RaftOptions()
        data = b"x" * (options.max_append_bytes - codec.ENTRY_OVERHEAD)
        append = Append(
            1,
            2,
            3,
            prev_index=2**40,
            prev_term=2**30,
            commit=2**40,
            entries=(Entry(2**40, 2**30, 0, data),),
        )
        self.assertLessEqual(len(codec.encode(append)), codec.MAX_MESSAGE_BYTES)
        config = encode_config(ClusterConfig(range(7), (), {n: "h" * 200 + ":7373" for n in range(7)}, 7))
        chunk = InstallSnapshot(
            1,
            2,
            3,
            meta=SnapshotMeta(1, 1, config),
            offset=0,
            data=b"y" * options.snapshot_chunk_bytes,
        )
        self.assertLessEqual(len(codec.encode(chunk)), codec.MAX_MESSAGE_BYTES)

    def test_options_refuse_oversized_appends(self):
        """A max_append_bytes that could exceed the message limit is refused."""
        self.assertRaises(ValueError, RaftOptions, max_append_bytes=60_000)
        self.assertRaises(ValueError, RaftOptions, snapshot_chunk_bytes=40_000)


ENCODED_EXAMPLES = [
    "01000000000000000100000000000000020000000000000007000000000000000a00000000000000060100",
    "01000000000000000100000000000000020000000000000007000000000000000a00000000000000060001",
    "020000000000000002000000000000000100000000000000070101",
    "03000000000000000100000000000000020000000000000007000000000000000900000000000000060000000000000008000000"
    "02000000000000000a00000000000000070100000000000000000000000b00000000000000070000000005006461746100000000"
    "0000000000",
    "03000000000000000100000000000000020000000000000007000000000000000000000000000000000000000000000000000000"
    "00000000000000000000",
    "0400000000000000020000000000000001000000000000000700000000000000090100000000000000040000000000000003",
    "05000000000000000100000000000000020000000000000007000000000000000800000000000000030000000000000000000000"
    "000000000000000000000000000000000000000000",
    "0600000000000000020000000000000001000000000000000700000000000000030000000000000000",
    "0700000000000000010000000000000002000000000000000700000000000000090000000000000006000000027b7d0000000000"
    "008000000000056368756e6b01",
    "0800000000000000020000000000000001000000000000000700000000000000090000000000008005",
    "09000000000000000100000000000000020000000000000007",
    "0a000000000000000300000000000000010000000000000000000000057265712d31",
    "0b000000000000000100000000000000030000000000000007000000057265712d310000000000000008",
]
"""The bytes of L{EXAMPLES}, as the field-by-field layout of the module docstring gives them."""

UINT = st.integers(0, 2**64 - 1)
SMALL = st.integers(0, 3) | UINT
NODE = st.integers(-1, 4) | st.integers(-(2**63), 2**63 - 1)
ENTRIES = st.lists(st.builds(Entry, SMALL, SMALL, st.integers(0, 255), st.binary(max_size=40)), max_size=4)


def _message_strategy(cls):
    """Any message of kind C{cls}, every field drawn."""
    fields = {}
    for field in attrs.fields(cls)[3:]:
        if field.name == "entries":
            fields[field.name] = ENTRIES
        elif field.name == "meta":
            fields[field.name] = st.builds(SnapshotMeta, SMALL, SMALL, st.binary(max_size=20))
        elif field.type is bool:
            fields[field.name] = st.booleans()
        elif field.type is bytes:
            fields[field.name] = st.binary(max_size=40)
        else:
            fields[field.name] = SMALL
    return st.builds(cls, NODE, NODE, SMALL, **fields)


MESSAGES = st.one_of(*(_message_strategy(cls) for cls in codec.SCHEMAS))


@st.composite
def damaged(draw):
    """The bytes of a message, cut short, extended, or with bytes changed (flags set to 2 among them)."""
    data = bytearray(codec.encode(draw(MESSAGES)))
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.sampled_from(["cut", "extend", "byte", "two"]))
        if change == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif change == "extend":
            data += draw(st.binary(min_size=1, max_size=4))
        elif data:
            data[draw(st.integers(0, len(data) - 1))] = 2 if change == "two" else draw(st.integers(0, 255))
    return bytes(data)


def _outcome(decode, data):
    try:
        return decode(data)
    except codec.CodecError as e:
        return f"CodecError: {e}"


class CodecLayoutTests(SynchronousTestCase):
    """
    The fast encoders and decoders of the hot kinds give exactly what the
    field-by-field layout of the module docstring gives, and refuse what it
    refuses with the same error.
    """

    def test_bytes_follow_the_documented_layout(self):
        """The encoding of every kind is pinned: nodes of one build agree on it."""
        self.assertEqual([codec.encode(m).hex() for m in EXAMPLES], ENCODED_EXAMPLES)
        self.assertEqual([codec.encode_by_schema(m).hex() for m in EXAMPLES], ENCODED_EXAMPLES)

    def test_schemas_name_every_field_in_order(self):
        """A field added to a message without the codec knowing it would be lost on the way."""
        for cls, (_, fields) in codec.SCHEMAS.items():
            self.assertEqual(
                [name for name, _ in fields], [f.name for f in attrs.fields(cls)[3:]], f"{cls.__name__} schema"
            )

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(MESSAGES)
    def test_any_message_round_trips(self, message):
        data = codec.encode(message)
        self.assertEqual(data, codec.encode_by_schema(message))
        self.assertEqual(codec.decode(data), message)
        self.assertEqual(codec.decode(bytearray(data)), message)

    @settings(max_examples=600, derandomize=True, database=None, deadline=None)
    @given(damaged())
    def test_damaged_bytes_decode_as_the_layout_says(self, data):
        """Damaged bytes give the same message or the same CodecError as the field-by-field reader."""
        self.assertEqual(_outcome(codec.decode, data), _outcome(codec.decode_by_schema, data))

    def test_malformed_hot_kinds(self):
        """The errors for damaged Appends, AppendResponses and Heartbeats."""
        append = codec.encode(EXAMPLES[3])
        response = codec.encode(EXAMPLES[5])
        heartbeat = codec.encode(EXAMPLES[6])
        cases = [
            (append[:-1], "truncated Raft message"),
            (append[:60], "truncated Raft message"),
            (append + b"\x00", "trailing bytes after Raft message"),
            (append[:-1] + b"\x02", "malformed boolean in Raft message"),
            (response[:33] + b"\x02" + response[34:], "malformed boolean in Raft message"),
            (response[:33] + b"\x02", "malformed boolean in Raft message"),
            (response[:-1], "truncated Raft message"),
            (heartbeat + b"\x00", "trailing bytes after Raft message"),
            (heartbeat[:-3], "truncated Raft message"),
            (b"\x00" + heartbeat[1:], "unknown Raft message kind 0"),
        ]
        for data, error in cases:
            with self.assertRaises(codec.CodecError, msg=data.hex()) as e:
                codec.decode(data)
            self.assertEqual(str(e.exception), error, data.hex())


class ConfigEncodingTests(SynchronousTestCase):
    """encode_config/decode_config."""

    def test_round_trip_and_canonical(self):
        """A configuration survives encoding; equal configurations give equal bytes."""
        config = ClusterConfig({0, 2}, {5}, {5: "c:7373", 0: "a:7373", 2: "b:7373"}, 6, "cid")
        data = encode_config(config)
        self.assertEqual(decode_config(data), config)
        same = ClusterConfig([2, 0], [5], {0: "a:7373", 2: "b:7373", 5: "c:7373"}, 6, "cid")
        self.assertEqual(encode_config(same), data)
        self.assertEqual(
            data,
            b'{"addresses":{"0":"a:7373","2":"b:7373","5":"c:7373"},"cluster_id":"cid",'
            b'"learners":[5],"next_id":6,"voters":[0,2]}',
        )

    def test_empty(self):
        """Empty bytes are the empty configuration."""
        self.assertEqual(decode_config(b""), EMPTY_CONFIG)

    def test_malformed(self):
        """Garbage and contradictions are refused."""
        self.assertRaises(ValueError, decode_config, b"{")
        self.assertRaises(ValueError, decode_config, b'{"voters":[1]}')
        bad = b'{"addresses":{},"learners":[1],"next_id":2,"voters":[1]}'
        self.assertRaises(ValueError, decode_config, bad)

    def test_single_node(self):
        """A fresh cluster is its one node, with the next id after it."""
        config = single_node_config(0, "kms-1:7373", "c1")
        self.assertEqual((config.voters, config.next_id, config.address_of(0)), ({0}, 1, "kms-1:7373"))
        self.assertEqual(config.node_at("kms-1:7373"), 0)

    def test_config_entry_kind_constant(self):
        """ENTRY_CONFIG keeps its value (storage depends on it)."""
        self.assertEqual(ENTRY_CONFIG, 2)
