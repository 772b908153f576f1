"""
Proto-JSON output and input, and the Accept negotiation of spec section 3.
"""

import json

from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from minkms.wire import jsonfmt, kms_pb2 as pb


class ToJsonTests(SynchronousTestCase):
    """The proto3 JSON mapping with json_name keys, compact."""

    def test_version_spec_example(self):
        """Exactly the VersionResponse example of spec section 5.2."""
        message = pb.VersionResponse(
            Version="2025-01-01T00-00-00Z", Commit="0123abcd", APIVersion="v1", Host="10.0.0.1:7373"
        )
        self.assertEqual(
            jsonfmt.to_json(message),
            b'{"version":"2025-01-01T00-00-00Z","commit":"0123abcd","api_version":"v1",'
            b'"host":"10.0.0.1:7373","fips140":false}',
        )

    def test_without_defaults(self):
        """defaults=False leaves default fields out (the vectors' form)."""
        message = pb.VersionResponse(Version="v", FIPS140=False)
        self.assertEqual(jsonfmt.to_json(message, defaults=False), b'{"version":"v"}')
        self.assertEqual(jsonfmt.to_dict(message), {"version": "v"})

    def test_scalar_mapping(self):
        """64-bit integers as strings, bytes as standard base64, sint64 negative."""
        status = pb.ServerStatusResponse(Commit=2**64 - 1, LeaderID=-1, HeapMemInUse=5, CPUs=16)
        self.assertEqual(
            jsonfmt.to_dict(status),
            {"commit": "18446744073709551615", "leader_id": "-1", "sys_cpu_num": 16, "sys_mem_heap_used": "5"},
        )
        self.assertEqual(jsonfmt.to_dict(pb.MACResponse(MAC=b"\xfb\xff\xfe")), {"mac": "+//+"})

    def test_well_known_types(self):
        """Duration as "1.500s", Timestamp as RFC 3339 with Z."""
        status = pb.ServerStatusResponse()
        status.ElectionTimeout.FromMilliseconds(1500)
        status.UpTime.FromSeconds(42)
        self.assertEqual(jsonfmt.to_dict(status), {"uptime": "42s", "election_timeout": "1.500s"})
        profile = pb.ProfileStatusResponse()
        profile.Started.FromJsonString("2025-03-14T09:26:53.589793238Z")
        self.assertEqual(
            jsonfmt.to_json(profile, defaults=False),
            b'{"started":"2025-03-14T09:26:53.589793238Z"}',
        )

    def test_unset_message_left_out(self):
        """Unset message fields are absent even with defaults."""
        data = json.loads(jsonfmt.to_json(pb.ProfileStatusResponse()))
        self.assertNotIn("started", data)
        self.assertEqual(data["block_rate"], 0)

    def test_maps_sorted(self):
        """Map keys ascending (integers numerically), so output is deterministic."""
        cluster = pb.ClusterStatusResponse()
        for node in (10, 2, 0):
            cluster.NodesDown[node] = f"n{node}"
        self.assertEqual(
            jsonfmt.to_json(cluster, defaults=False),
            b'{"nodes_down":{"0":"n0","2":"n2","10":"n10"}}',
        )
        identity = pb.IdentityResponse()
        identity.Tags.update({"b": "2", "B": "1", "a": "3"})
        self.assertEqual(list(jsonfmt.to_dict(identity)["tags"]), ["B", "a", "b"])

    def test_nested_and_repeated(self):
        """Lists of messages and maps of messages."""
        listing = pb.ListKeysResponse(ContinueAt="c")
        listing.Keys.add(Name="a", Version=1)
        policy = pb.PolicyResponse(Name="p")
        policy.Allow["KEY:STATUS"].Rules["*"].SetInParent()
        self.assertEqual(jsonfmt.to_dict(listing), {"keys": [{"name": "a", "version": 1}], "continue_at": "c"})
        self.assertEqual(jsonfmt.to_dict(policy), {"name": "p", "allow": {"KEY:STATUS": {"rules": {"*": {}}}}})

    def test_defaults_everywhere(self):
        """With defaults, empty lists and maps are written too."""
        self.assertEqual(jsonfmt.to_json(pb.ClusterStatusResponse()), b'{"nodes_up":{},"nodes_down":{}}')

    def test_agrees_with_json_format(self):
        """Our walker gives the same values as protobuf's own MessageToDict."""
        status = pb.ServerStatusResponse(Version="v", Commit=7, LeaderID=-3, HSMs=["a", "b"])
        status.Nodes[1] = "h1"
        status.LastHeartbeat.FromNanoseconds(3_000_000_001)
        for defaults in (False, True):
            self.assertEqual(
                jsonfmt.to_dict(status, defaults),
                json_format.MessageToDict(status, always_print_fields_with_no_presence=defaults),
            )

    def test_utf8(self):
        """Non-ASCII text is written as UTF-8, not escaped."""
        self.assertEqual(jsonfmt.to_json(pb.ErrResponse(Message="ü")), '{"message":"ü"}'.encode())


class FromJsonTests(SynchronousTestCase):
    """Parsing proto-JSON, as kms-go's protojson does."""

    def test_round_trip(self):
        """to_json then from_json gives the message back."""
        status = pb.ServerStatusResponse(Version="v", Commit=7, LeaderID=-3)
        status.Nodes[3] = "x"
        status.UpTime.FromMilliseconds(1500)
        self.assertEqual(jsonfmt.from_json(jsonfmt.to_json(status), pb.ServerStatusResponse), status)

    def test_unknown_key_rejected(self):
        """Unknown keys are an error."""
        self.assertRaises(json_format.ParseError, jsonfmt.from_json, b'{"version":"v","extra":1}', pb.VersionResponse)

    def test_from_dict(self):
        """The inverse of to_dict."""
        value = {"name": "k", "plaintext": "aGk=", "version": 2}
        self.assertEqual(
            jsonfmt.from_dict(value, pb.EncryptRequest),
            pb.EncryptRequest(Name="k", Plaintext=b"hi", Version=2),
        )


class NegotiateTests(SynchronousTestCase):
    """Spec section 3, row 1: octet-stream means protobuf, anything else JSON."""

    def test_protobuf(self):
        """application/octet-stream, alone or with others but not JSON."""
        for accept in (
            "application/octet-stream",
            "Application/Octet-Stream",
            b"application/octet-stream",
            "text/plain, application/octet-stream;q=0.5",
            ["gzip", "application/octet-stream"],
        ):
            self.assertEqual(jsonfmt.negotiate(accept), "protobuf", accept)

    def test_json(self):
        """Wildcards, JSON, nothing, both, or octet-stream refused with q=0."""
        for accept in (
            "application/*",
            "*/*",
            "",
            None,
            "application/json",
            "application/json, application/octet-stream",
            "application/octet-stream;q=0",
            ["application/*", "gzip"],
        ):
            self.assertEqual(jsonfmt.negotiate(accept), "json", accept)
