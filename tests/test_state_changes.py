"""Tests for L{minkms.state.changes}: canonical, strict command encoding."""

import base64
import json

import attrs
from twisted.trial import unittest

from minkms.state import changes as sc
from tests.test_state_fixtures import ROOT, Driver, material

COMMON = {"caller": ROOT, "sysadmin": True, "time": 1_700_000_000_000_000_000}

SAMPLES = [
    sc.CreateEnclave(name="e1", **COMMON),
    sc.DeleteEnclave(name="e1", **COMMON),
    sc.CreateKey(enclave="e1", name="k", key_type="", add_version=True, material=material("k"), **COMMON),
    sc.ImportKey(enclave="e1", name="k", key_type="ChaCha20", material=b"\x00" * 32, **COMMON),
    sc.DeleteKey(enclave="e1", name="k", version=3, all_versions=False, **COMMON),
    sc.CreatePolicy(
        enclave="e1",
        name="p",
        allow={"KEY:ENCRYPT": ("*",), "key:status": ()},
        deny={"KEY:DECRYPT": ("a", "b*")},
        **COMMON,
    ),
    sc.DeletePolicy(enclave="e1", name="p", **COMMON),
    sc.AssignPolicy(enclave="e1", identity=ROOT, policy="p", **COMMON),
    sc.CreateIdentity(
        enclave="e1",
        identity=ROOT,
        privilege="User",
        service_account=True,
        tags={"b": "2", "a": "1"},
        **COMMON,
    ),
    sc.DeleteIdentity(enclave="e1", identity=ROOT, **COMMON),
    sc.RestoreState(state=b'{"format":1}', **COMMON),
]


class EncodingTests(unittest.TestCase):
    def test_round_trip(self):
        for command in SAMPLES:
            self.assertEqual(sc.decode(command.encode()), command)

    def test_canonical(self):
        for command in SAMPLES:
            data = command.encode()
            self.assertEqual(sc.decode(data).encode(), data)
            doc = json.loads(data)
            self.assertEqual(data, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())

    def test_dict_order_does_not_matter(self):
        a = sc.CreateIdentity(
            enclave="e",
            identity=ROOT,
            privilege="",
            service_account=False,
            tags={"a": "1", "b": "2"},
            **COMMON,
        )
        b = attrs.evolve(a, tags={"b": "2", "a": "1"})
        self.assertEqual(a.encode(), b.encode())

    def test_layout(self):
        doc = json.loads(SAMPLES[2].encode())
        self.assertEqual(doc["op"], "key.create")
        self.assertEqual(doc["v"], 1)
        self.assertEqual(doc["caller"], ROOT)
        self.assertEqual(doc["time"], COMMON["time"])
        self.assertIs(doc["sysadmin"], True)
        self.assertEqual(doc["material"], base64.b64encode(material("k")).decode())

    def test_material_not_in_repr(self):
        self.assertNotIn("material", repr(SAMPLES[3]))

    def test_every_type_covered(self):
        self.assertEqual({type(c).op for c in SAMPLES}, set(sc.COMMAND_TYPES))


class DecodeErrorTests(unittest.TestCase):
    def good(self):
        return json.loads(SAMPLES[3].encode())

    def assertRejected(self, data):
        if isinstance(data, dict):
            data = json.dumps(data).encode()
        self.assertRaises(sc.CommandError, sc.decode, data)

    def test_not_json(self):
        for data in (b"", b"\xff\xfe", b"[1]", b"null", b"{", b'"x"'):
            self.assertRejected(data)

    def test_format_version(self):
        for v in (0, 2, "1", True, None):
            doc = self.good()
            doc["v"] = v
            self.assertRejected(doc)

    def test_unknown_op(self):
        doc = self.good()
        doc["op"] = "key.explode"
        self.assertRejected(doc)
        doc["op"] = 5
        self.assertRejected(doc)

    def test_missing_and_extra_fields(self):
        doc = self.good()
        del doc["material"]
        self.assertRejected(doc)
        doc = self.good()
        doc["extra"] = 1
        self.assertRejected(doc)

    def test_wrong_types(self):
        for field, value in (
            ("name", 1),
            ("add_version", 1),
            ("time", "1"),
            ("time", True),
            ("time", -1),
            ("time", 2**63),
            ("time", 1.5),
            ("material", "not base64!"),
            ("material", 5),
            ("caller", None),
        ):
            doc = self.good()
            doc[field] = value
            self.assertRejected(doc)

    def test_wrong_nested_types(self):
        doc = json.loads(SAMPLES[6].encode())
        doc["allow"] = {"KEY:ENCRYPT": "*"}
        self.assertRejected(doc)
        doc["allow"] = {"KEY:ENCRYPT": [1]}
        self.assertRejected(doc)
        doc = json.loads(SAMPLES[9].encode())
        doc["tags"] = {"a": 1}
        self.assertRejected(doc)
        doc = json.loads(SAMPLES[0].encode())
        for key in ("x", "-1", "01", "\u00b2"):
            doc["nodes"] = {key: "h"}
            self.assertRejected(doc)


class DriverLogTests(unittest.TestCase):
    def test_driver_log_decodes(self):
        driver = Driver().setup()
        for data in driver.log:
            self.assertEqual(sc.decode(data).encode(), data)
