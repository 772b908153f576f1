"""
Known answers from the real kms-go client (shared/vectors, see its
README.md): our codec must decode its bodies to the recorded values and
encode the recorded values to its bytes.
"""

import base64
import datetime
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from minkms import errors as kms_errors
from minkms.errors import KMSError
from minkms.wire import frames, jsonfmt, kms_pb2 as pb
from minkms.wire.canonical import encode_message
from minkms.wire.commands import BY_CODE
from minkms.wire.errors import error_body, parse_error

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "vectors"))


def load_rows(testcase, name):
    """The rows of one vectors file as dicts keyed by the header line."""
    path = os.path.join(VECTORS, name)
    if not os.path.isfile(path):
        testcase.fail(
            f"known-answer vectors missing: {path} not found (shared/ must be a sibling of the repository clone)"
        )
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line]
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    testcase.assertTrue(rows, f"{path} has no rows")
    return rows


def as_list(value):
    """A row value as a list of messages: batch rows hold a JSON array."""
    return value if isinstance(value, list) else [value]


def has_map_entries(message):
    """Whether some map field of C{message} (or a nested message) is non-empty."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            return True
        for item in value if field.is_repeated else [value]:
            if has_map_entries(item):
                return True
    return False


def reverse_maps(data, descriptor):
    """
    C{data} (protobuf bytes of C{descriptor}) with the entries of every map
    written in reverse order, nested messages included: a valid encoding
    of the same message that kms-go could also send.
    """
    fields = list(_wire_fields(data))
    out = []
    runs = {}
    for number, wire_type, raw, payload in fields:
        field = descriptor.fields_by_number.get(number)
        if field is not None and field.message_type is not None and wire_type == 2:
            if field.message_type.GetOptions().map_entry:
                value_type = field.message_type.fields_by_name["value"].message_type
                if value_type is not None:
                    payload = _rewrite_entry_value(payload, value_type)
                runs.setdefault(number, []).append(len(out))
            else:
                payload = reverse_maps(payload, field.message_type)
            raw = _key(number, 2) + _varint(len(payload)) + payload
        out.append(raw)
    for positions in runs.values():
        items = [out[i] for i in positions]
        for i, item in zip(positions, reversed(items)):
            out[i] = item
    return b"".join(out)


def _rewrite_entry_value(entry, value_type):
    out = []
    for number, wire_type, raw, payload in _wire_fields(entry):
        if number == 2 and wire_type == 2:
            payload = reverse_maps(payload, value_type)
            raw = _key(2, 2) + _varint(len(payload)) + payload
        out.append(raw)
    return b"".join(out)


def _wire_fields(data):
    offset = 0
    while offset < len(data):
        start = offset
        key, offset = _read_varint(data, offset)
        number, wire_type = key >> 3, key & 7
        payload = None
        if wire_type == 0:
            _, offset = _read_varint(data, offset)
        elif wire_type == 1:
            offset += 8
        elif wire_type == 5:
            offset += 4
        elif wire_type == 2:
            length, offset = _read_varint(data, offset)
            payload = data[offset : offset + length]
            offset += length
        else:
            raise ValueError(f"wire type {wire_type}")
        yield number, wire_type, data[start:offset], payload


def _read_varint(data, offset):
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, offset


def _varint(value):
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number, wire_type):
    return _varint(number << 3 | wire_type)


def frame_bodies(code, body):
    """The protobuf payloads of the frames of C{body}, all of code C{code}."""
    parts = []
    offset = 0
    while offset < len(body):
        got, length = frames.HEADER.unpack_from(body, offset)
        if got != code:
            raise ValueError(f"frame of code {got} in a body of code {code}")
        parts.append(body[offset + 6 : offset + 6 + length])
        offset += 6 + length
    return parts


def go_time(stamp):
    """Go's time.Format(RFC3339Nano) of a Timestamp in UTC."""
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=stamp.seconds)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if stamp.nanos:
        text += "." + f"{stamp.nanos:09d}".rstrip("0")
    return text + "Z"


def go_rule_set(rule_set):
    """kms-go's rendering of a RuleSet: [] / one bare string / sorted list."""
    patterns = sorted(rule_set.Rules, key=lambda p: (len(p), p))
    if len(patterns) == 1:
        return patterns[0]
    return patterns


KEY_TYPES = {"AES256": 1, "ChaCha20": 2}
GO_NAMES = {"CPUArch": "Arch"}


def sdk_mismatches(sdk, message, path=""):
    """
    Where our decoded C{message} differs from what the real client method
    returned (C{decoded_by_sdk}): Go field names, durations in ns, times
    in RFC 3339, key types and privileges as numbers.
    """
    problems = []
    for name, want in sdk.items():
        if name == "Items":
            field = message.DESCRIPTOR.fields_by_number[1]
        else:
            field = message.DESCRIPTOR.fields_by_name[GO_NAMES.get(name, name)]
        got = getattr(message, field.name)
        where = f"{path}.{name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            want = want or {}
            value_field = field.message_type.fields_by_name["value"]
            if sorted(want) != sorted(str(k) for k in got):
                problems.append(f"{where}: keys {sorted(want)} != {sorted(got)}")
                continue
            for key in got:
                problems += _single_mismatch(want[str(key)], value_field, got[key], f"{where}[{key}]")
        elif field.is_repeated:
            want = want or []
            if len(want) != len(got):
                problems.append(f"{where}: {len(want)} items != {len(got)}")
                continue
            for i, (w, g) in enumerate(zip(want, got)):
                problems += _single_mismatch(w, field, g, f"{where}[{i}]")
        else:
            problems += _single_mismatch(want, field, got, where)
    return problems


def _single_mismatch(want, field, got, where):
    if field.message_type is not None:
        kind = field.message_type.full_name
        if kind == "google.protobuf.Timestamp":
            got = go_time(got)
        elif kind == "google.protobuf.Duration":
            got = got.seconds * 1_000_000_000 + got.nanos
        elif kind == "minio.kms.RuleSet":
            got = go_rule_set(got)
        else:
            return sdk_mismatches(want, got, where)
    elif field.type == field.TYPE_BYTES:
        got = base64.b64encode(got).decode()
    elif field.containing_type.name == "KeyStatusResponse" and field.name == "Type":
        got = KEY_TYPES[got]
    if got != want:
        return [f"{where}: {got!r} != {want!r}"]
    return []


class RequestVectorsTests(SynchronousTestCase):
    """Every row of requests.tsv, through our server decoder and client encoder."""

    def setUp(self):
        self.rows = load_rows(self, "requests.tsv")

    def test_enough_rows(self):
        """The file is the full set (one row or more per command kms-go sends)."""
        self.assertGreaterEqual(len(self.rows), 44)
        self.assertEqual(
            {int(r["code"]) for r in self.rows},
            {c.code for c in BY_CODE.values()} - {209},
        )

    def test_decode(self):
        """Our decoder turns each body into the row's command and inputs."""
        for row in self.rows:
            body = bytes.fromhex(row["frame_hex"])
            decoded = frames.decode_request(body)
            want = as_list(json.loads(row["inputs"]))
            self.assertEqual([c.code for c, _ in decoded], [int(row["code"])] * len(want), row)
            self.assertEqual(decoded[0][0].name, row["command"])
            self.assertEqual([jsonfmt.to_dict(m) for _, m in decoded], want, row["command"])

    def test_encode(self):
        """
        Our encoder turns the inputs into the row's exact bytes.  Rows with
        map fields hold the keys ascending, which is how our encoder sorts,
        so they are byte-equal too; their decoded views must match as well.
        """
        for row in self.rows:
            command = BY_CODE[int(row["code"])]
            body = bytes.fromhex(row["frame_hex"])
            messages = [jsonfmt.from_dict(v, command.request) for v in as_list(json.loads(row["inputs"]))]
            ours = frames.encode_request(command.code, messages)
            if any(has_map_entries(m) for m in messages):
                self.assertEqual(
                    [jsonfmt.to_dict(m) for _, m in frames.decode_request(ours)],
                    [jsonfmt.to_dict(m) for _, m in frames.decode_request(body)],
                )
            self.assertEqual(ours.hex(), row["frame_hex"], row["command"])

    def test_map_rows_present(self):
        """The map rows named by the README are there and hold entries."""
        names = [
            r["command"]
            for r in self.rows
            if any(has_map_entries(m) for _, m in frames.decode_request(bytes.fromhex(r["frame_hex"])))
        ]
        self.assertIn("POLICY:CREATE", names)
        self.assertEqual(names.count("IDENTITY:CREATE"), 2)

    def test_any_map_order(self):
        """Map entries in reverse order decode to the same inputs."""
        checked = 0
        for row in self.rows:
            code = int(row["code"])
            body = bytes.fromhex(row["frame_hex"])
            descriptor = BY_CODE[code].request.DESCRIPTOR
            reordered = b"".join(
                frames.HEADER.pack(code, len(p)) + p
                for p in (reverse_maps(p, descriptor) for p in frame_bodies(code, body))
            )
            if reordered != body:
                checked += 1
            decoded = [jsonfmt.to_dict(m) for _, m in frames.decode_request(reordered)]
            self.assertEqual(decoded, as_list(json.loads(row["inputs"])))
        self.assertGreaterEqual(checked, 3)


class ResponseVectorsTests(SynchronousTestCase):
    """Every row of responses.tsv, through our server encoder and client decoder."""

    def setUp(self):
        self.rows = load_rows(self, "responses.tsv")

    def _framed(self):
        return [r for r in self.rows if r["code"]]

    def _plain(self):
        return [r for r in self.rows if not r["code"] and r["message"] != "ErrResponse"]

    def _errors(self):
        return [r for r in self.rows if r["message"] == "ErrResponse"]

    def test_enough_rows(self):
        """Framed, plain and error rows are all there."""
        self.assertGreaterEqual(len(self._framed()), 17)
        self.assertEqual({r["command"] for r in self._plain()}, {"VERSION", "PROFILE:STATUS"})
        self.assertEqual(len(self._errors()), 8)

    def test_framed_decode(self):
        """Our client decoder turns each framed body into the row's fields."""
        for row in self._framed():
            command = BY_CODE[int(row["code"])]
            self.assertEqual(command.response.DESCRIPTOR.name, row["message"])
            want = as_list(json.loads(row["fields"]))
            got = frames.decode_response(command.code, bytes.fromhex(row["frame_hex"]), expect=len(want))
            self.assertEqual([jsonfmt.to_dict(m) for m in got], want, row["command"])

    def test_framed_encode(self):
        """
        Our server encoder turns the fields into the row's exact bytes,
        CLUSTER:STATUS (integer map keys ascending) and the string-keyed
        map rows included; the decoded views match too.
        """
        for row in self._framed():
            command = BY_CODE[int(row["code"])]
            messages = [jsonfmt.from_dict(v, command.response) for v in as_list(json.loads(row["fields"]))]
            ours = frames.encode_response(command.code, messages)
            body = bytes.fromhex(row["frame_hex"])
            if any(has_map_entries(m) for m in messages):
                self.assertEqual(
                    [jsonfmt.to_dict(m) for m in frames.decode_response(command.code, ours)],
                    [jsonfmt.to_dict(m) for m in frames.decode_response(command.code, body)],
                )
            self.assertEqual(ours.hex(), row["frame_hex"], row["command"])

    def test_any_map_order(self):
        """
        Responses with map entries in another order (reversed, or upb's
        descending integer keys) decode to the same fields.
        """
        checked = 0
        for row in self._framed():
            command = BY_CODE[int(row["code"])]
            body = bytes.fromhex(row["frame_hex"])
            want = as_list(json.loads(row["fields"]))
            payloads = frame_bodies(command.code, body)
            reordered = b"".join(
                frames.HEADER.pack(command.code, len(p)) + p
                for p in (reverse_maps(p, command.response.DESCRIPTOR) for p in payloads)
            )
            checked += reordered != body
            for variant in (reordered, self._upb_body(command, payloads)):
                got = frames.decode_response(command.code, variant)
                self.assertEqual([jsonfmt.to_dict(m) for m in got], want, row["command"])
        self.assertGreaterEqual(checked, 4)

    def _upb_body(self, command, payloads):
        return b"".join(
            frames.HEADER.pack(command.code, len(s)) + s
            for s in (command.response.FromString(p).SerializeToString(deterministic=True) for p in payloads)
        )

    def test_upb_integer_keys_differ(self):
        """
        The reason for our own encoder: upb writes the 3-node CLUSTER:STATUS
        row with integer keys descending, which is not the row's order.
        """
        row = next(r for r in self._framed() if r["command"] == "CLUSTER:STATUS" and '"2"' in r["fields"])
        message = jsonfmt.from_dict(json.loads(row["fields"]), pb.ClusterStatusResponse)
        payload = bytes.fromhex(row["frame_hex"])[6:]
        self.assertNotEqual(message.SerializeToString(deterministic=True), payload)
        self.assertEqual(encode_message(message), payload)

    def test_plain_bodies(self):
        """VERSION and PROFILE:STATUS are unframed protobuf, both ways."""
        for row in self._plain():
            cls = getattr(pb, row["message"])
            body = bytes.fromhex(row["frame_hex"])
            self.assertEqual(jsonfmt.to_dict(frames.decode_message(cls, body)), json.loads(row["fields"]))
            message = jsonfmt.from_dict(json.loads(row["fields"]), cls)
            self.assertEqual(encode_message(message).hex(), row["frame_hex"])

    def test_decoded_by_sdk(self):
        """
        What we decode agrees with what the kms-go method returned: Go
        field names, durations in ns, RFC 3339 times, key types and
        privileges as numbers, rule sets, zero identities.
        """
        for row in self._framed() + self._plain():
            sdk = json.loads(row["decoded_by_sdk"])
            body = bytes.fromhex(row["frame_hex"])
            if row["code"]:
                messages = frames.decode_response(int(row["code"]), body)
            else:
                messages = [frames.decode_message(getattr(pb, row["message"]), body)]
            if isinstance(sdk, list):
                self.assertEqual(len(sdk), len(messages), row["command"])
                pairs = zip(sdk, messages)
            else:
                self.assertEqual(len(messages), 1)
                pairs = [(sdk, messages[0])]
            for want, message in pairs:
                self.assertEqual(sdk_mismatches(want, message, row["command"]), [])

    def test_error_rows(self):
        """
        The binary ErrResponse bodies: our client parser gives the status
        and text kms-go did, which equal our canonical errors; our server
        writes the same bytes when protobuf is asked for.
        """
        for row in self._errors():
            sdk = json.loads(row["decoded_by_sdk"])
            body = bytes.fromhex(row["frame_hex"])
            error = parse_error(sdk["Code"], "application/octet-stream", body)
            self.assertEqual(error, KMSError(sdk["Code"], sdk["Err"]))
            self.assertEqual(error.message, json.loads(row["fields"])["message"])
            canonical = getattr(kms_errors, sdk["errors_is"].removeprefix("kms."))
            self.assertEqual(error, canonical)
            self.assertEqual(
                error_body(canonical, "application/octet-stream"),
                (b"application/octet-stream", body),
            )
            self.assertEqual(
                error_body(canonical, "application/*"),
                (b"application/json", json.dumps({"message": sdk["Err"]}, separators=(",", ":")).encode()),
            )
