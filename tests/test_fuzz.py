"""
Property-based fuzzing of every decoder that reads bytes a stranger or a
damaged disk can choose (issue 11, item 7): each gives a value or its
documented error, never another exception and never a hang, and a damaged
C{kms.db} never yields a record that was not written.

The suite runs the short profile C{minkms-suite} (derandomized, so a run is
repeatable); C{bench/fuzz.py} runs the long one (C{HYPOTHESIS_PROFILE=minkms-long},
C{MINKMS_FUZZ_EXAMPLES} examples per test, random seeds).
"""

import json
import os
import re
import struct

import yaml
from google.protobuf import json_format
from hypothesis import HealthCheck, example, given, settings, strategies as st
from twisted.trial import unittest

from minkms.errors import KMSError, StartupError
from minkms.hsm import SoftHSM
from minkms.raft.types import ENTRY_CONFIG, Entry, HardState, Snapshot, SnapshotMeta
from minkms.server.config import load_config
from minkms.state import changes as sc, policy, snapshot
from minkms.state.machine import StateMachine
from minkms.storage.errors import CorruptVolume
from minkms.storage.layout import RecordSealer, decode_header, encode_header, new_header
from minkms.storage.records import RecordDecodeError, decode_record
from minkms.storage.recovery import scan
from minkms.wire import errors as wire_errors, frames, jsonfmt, kms_pb2 as pb
from minkms.wire.commands import BY_CODE
from tests.support import write_server_certificate
from tests.test_state_fixtures import ROOT, T0

settings.register_profile(
    "minkms-suite",
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "minkms-long",
    max_examples=int(os.environ.get("MINKMS_FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "minkms-suite"))

CODES = sorted(BY_CODE)
DEEP_JSON = b"[" * 3000 + b"]" * 3000
"""Nesting past Python's recursion limit: found by this module in policies and config."""


def _frame(code: int, payload: bytes) -> bytes:
    return struct.pack(">HI", code, len(payload)) + payload


@st.composite
def framed_bodies(draw):
    """Bodies near the valid ones: known codes, real or random payloads, lengths off by a bit."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        code = draw(st.sampled_from(CODES) | st.integers(0, 0xFFFF))
        command = BY_CODE.get(code)
        if command is not None and draw(st.booleans()):
            payload = command.request().SerializeToString() + draw(st.binary(max_size=40))
        else:
            payload = draw(st.binary(max_size=80))
        frame = _frame(code, payload)
        cut = draw(st.integers(0, len(frame)))
        parts.append(frame[:cut] if draw(st.integers(0, 4)) == 0 else frame)
    return b"".join(parts)


class FrameFuzzTests(unittest.TestCase):
    """The C{/v1/kms} body decoders."""

    @given(st.binary(max_size=300) | framed_bodies())
    def test_request_decoder(self, body):
        try:
            pairs = frames.decode_request(body)
        except KMSError as e:
            self.assertEqual(e.status, 400)
            self.assertNotIn("\n", e.message)
            return
        self.assertTrue(pairs)
        self.assertEqual(len({command for command, _ in pairs}), 1)

    @given(st.sampled_from(CODES), st.binary(max_size=300) | framed_bodies())
    def test_response_decoder(self, code, body):
        try:
            frames.decode_response(code, body)
        except frames.FrameError:
            pass

    @given(st.sampled_from(CODES), st.binary(max_size=200))
    def test_protobuf_messages(self, code, payload):
        command = BY_CODE[code]
        for cls in (command.request, command.response):
            if cls is None:
                continue
            try:
                frames.decode_message(cls, payload)
            except KMSError as e:
                self.assertEqual(e.status, 400)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


class JSONFuzzTests(unittest.TestCase):
    """Proto-JSON bodies and the error bodies a client reads."""

    @given(
        st.sampled_from([pb.ErrResponse, pb.VersionResponse, pb.ListRequest, pb.EncryptRequest]),
        st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    )
    @example(pb.ErrResponse, b"\x80")
    @example(pb.ErrResponse, DEEP_JSON)
    def test_from_json(self, cls, data):
        try:
            jsonfmt.from_json(data, cls)
        except json_format.ParseError:
            pass

    @given(
        st.integers(400, 599),
        st.sampled_from([None, b"application/json", "application/octet-stream", "text/plain"]),
        st.binary(max_size=300),
    )
    @example(400, b"application/json", DEEP_JSON)
    def test_error_bodies(self, status, content_type, body):
        error = wire_errors.parse_error(status, content_type, body)
        self.assertEqual(error.status, status)


def _reference_states(pattern: str, prefix: str) -> set[int]:
    """The positions of a pattern an NFA can be in after C{prefix}."""

    def closure(positions):
        out = set()
        for i in positions:
            out.add(i)
            while i < len(pattern) and pattern[i] == "*":
                i += 1
                out.add(i)
        return out

    states = closure({0})
    for char in prefix:
        step = {i + (pattern[i] != "*") for i in states if i < len(pattern) and pattern[i] in ("*", char)}
        states = closure(step)
    return states


SMALL_TEXT = st.text(alphabet="ab*-", max_size=10)


class PolicyFuzzTests(unittest.TestCase):
    """Patterns decide as the regular language they denote; documents give 400 or rules."""

    @given(SMALL_TEXT, st.text(alphabet="ab-", max_size=12))
    def test_glob_is_the_regular_language(self, pattern, name):
        regex = ".*".join(re.escape(part) for part in pattern.split("*"))
        self.assertEqual(policy.matches(pattern, name), re.fullmatch(regex, name) is not None)
        states = _reference_states(pattern, name)
        self.assertEqual(policy.may_match_prefix(pattern, name), bool(states))
        covered = any(pattern[i:] and set(pattern[i:]) == {"*"} for i in states)
        self.assertEqual(policy.covers_prefix(pattern, name), covered)

    @given(
        st.binary(max_size=200)
        | JSON_VALUES.map(json.dumps)
        | st.fixed_dictionaries(
            {},
            optional={
                "allow": st.dictionaries(
                    st.sampled_from(sorted(policy.ACTIONS)) | st.text(max_size=8), JSON_VALUES, max_size=3
                ),
                "deny": JSON_VALUES,
            },
        ).map(json.dumps)
    )
    @example(DEEP_JSON)
    @example(b"\xff{}")
    def test_policy_documents(self, text):
        try:
            allow, deny = policy.policy_from_json(text)
        except KMSError as e:
            self.assertEqual(e.status, 400)
            return
        for rules in (allow, deny):
            for action, patterns in rules.items():
                self.assertIn(action, policy.ACTIONS)
                self.assertTrue(all(isinstance(p, str) and p for p in patterns))

    @given(
        st.dictionaries(
            st.sampled_from(sorted(policy.ENCLAVE_ACTIONS)) | st.text(max_size=8),
            st.lists(st.text(alphabet="ab*\x00é", max_size=20), max_size=5),
            max_size=3,
        ),
        st.text(max_size=90),
    )
    def test_policy_through_apply(self, rules, name):
        """A CreatePolicy with any rules and name is applied or refused with a 4xx, never crashes."""
        machine = StateMachine()
        self.assertIsNone(machine.apply(sc.CreateEnclave(caller=ROOT, sysadmin=True, time=T0, name="e").encode()))
        raw = {action: tuple(patterns) for action, patterns in rules.items()}
        command = sc.CreatePolicy(caller=ROOT, sysadmin=True, time=T0 + 1, enclave="e", name=name, allow=raw, deny=raw)
        result = machine.apply(command.encode())
        if result is not None:
            self.assertIsInstance(result, KMSError)
            self.assertEqual(result.status, 400)


class ConfigFuzzTests(unittest.TestCase):
    """C{config.yaml}: a checked configuration or one L{StartupError}."""

    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.key, self.cert = write_server_certificate(directory)
        self.path = os.path.join(directory, "config.yaml")

    def load(self, text: bytes):
        with open(self.path, "wb") as f:
            f.write(text)
        try:
            load_config(self.path)
        except StartupError as e:
            self.assertNotIn("\n", str(e))

    def values(self):
        paths = st.sampled_from([self.key, self.cert, "/nonexistent", "", "a\x00b"])
        return st.one_of(JSON_VALUES, paths, st.lists(paths, max_size=2))

    def test_nul_in_file_name(self):
        """Found by this module: a NUL in a certificate path raised ValueError."""
        for certs in ({"key": "a\0b", "cert": "a\0b"}, {"key": self.key, "cert": self.cert, "ca": "c\0"}):
            self.load(yaml.safe_dump({"version": "v1", "tls": {"certs": [certs]}}).encode())

    @given(st.data())
    def test_structured(self, data):
        value = self.values()
        doc = data.draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "version": st.sampled_from(["v1", "v2", 1]) | value,
                    "tls": st.fixed_dictionaries(
                        {},
                        optional={
                            "certs": st.lists(
                                st.fixed_dictionaries({}, optional={"key": value, "cert": value, "ca": value}),
                                max_size=2,
                            )
                            | value,
                            "ca": value,
                        },
                    )
                    | value,
                    "admin": st.fixed_dictionaries({}, optional={"identity": value}) | value,
                    "cluster": st.fixed_dictionaries(
                        {},
                        optional={
                            "heartbeat": value | st.sampled_from(["250ms", "1.5s", "2m", "0s", "-1"]),
                            "election_timeout": value | st.sampled_from(["1s", "9" * 400]),
                            "snapshot_entries": value,
                        },
                    )
                    | value,
                },
            )
        )
        self.load(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))

    @given(st.binary(max_size=200) | st.text(alphabet=":-[]{}!&*#|>'\" \nabv1", max_size=120).map(str.encode))
    @example(b"version: v1\ntls: " + DEEP_JSON)
    def test_raw_text(self, text):
        self.load(text)


HSM = SoftHSM(b"h" * 32)
REK = bytes(range(32))
WRITTEN = [
    Entry(1, 1, ENTRY_CONFIG, b"config"),
    HardState(1, 0, 1),
    Entry(2, 1, 0, b"x" * 40),
    Snapshot(SnapshotMeta(2, 1, b"members"), b"state" * 10),
    Entry(3, 2, 0, b""),
    HardState(2, None, 3),
]


def _volume() -> tuple[bytes, RecordSealer]:
    header = new_header(HSM, REK, "cluster", 0)
    data = encode_header(header)
    sealer = RecordSealer(REK, header.file_id)
    for batch in (WRITTEN[:2], WRITTEN[2:3], WRITTEN[3:]):
        data += sealer.encode_batch(len(data), batch)
    return data, sealer


VOLUME, SEALER = _volume()


@st.composite
def damaged_volumes(draw):
    """The volume with bytes flipped, cut, inserted, zeroed or moved."""
    data = bytearray(VOLUME)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "zero", "move"]))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=30))
        elif kind == "zero":
            size = draw(st.integers(1, 600))
            data[at : at + size] = bytes(len(data[at : at + size]))
        elif kind == "move":
            size = draw(st.integers(1, 200))
            piece = data[at : at + size]
            del data[at : at + size]
            to = draw(st.integers(0, len(data)))
            data[to:to] = piece
    return bytes(data)


class VolumeFuzzTests(unittest.TestCase):
    """The C{kms.db} reader: damage is reported, and nothing is made up."""

    @given(damaged_volumes())
    def test_damaged_volume(self, data):
        try:
            header, start = decode_header(data)
            result = scan(data, start, SEALER)
        except CorruptVolume as e:
            self.assertGreaterEqual(e.offset, 0)
            return
        records = [frame.record for frame in result.frames]
        self.assertEqual(records, WRITTEN[: len(records)])

    @given(st.binary(max_size=120))
    def test_record_plaintext(self, plaintext):
        try:
            decode_record(plaintext)
        except RecordDecodeError:
            pass

    @given(st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
    def test_state_snapshot_and_commands(self, data):
        """The state machine's own decoders (snapshot bytes, logged commands)."""
        try:
            snapshot.load(data)
        except snapshot.SnapshotError:
            pass
        try:
            sc.decode(data)
        except sc.CommandError:
            pass

    def test_intact_volume_reads_back(self):
        header, start = decode_header(VOLUME)
        result = scan(VOLUME, start, SEALER)
        self.assertEqual([f.record for f in result.frames], WRITTEN)
        self.assertIsNone(result.torn)
