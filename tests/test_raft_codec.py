"""
Tests of the Raft wire codec and of the cluster configuration encoding.
"""

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
