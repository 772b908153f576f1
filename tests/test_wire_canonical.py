"""
Our deterministic encoder: kms-go's byte order, including for integer map
keys where upb differs.
"""

import random

from twisted.trial.unittest import SynchronousTestCase

from minkms.wire import kms_pb2 as pb
from minkms.wire.canonical import encode_field_by_field, encode_message, needs_field_order


def random_status(rng):
    """A ServerStatusResponse with edge values in some fields, from C{rng}."""
    status = pb.ServerStatusResponse(
        Version=rng.choice(["", "2025-03-12T09-35-18Z"]),
        Commit=rng.choice([0, 1, 2**64 - 1]),
        LeaderID=rng.choice([0, -1, 2**62, -(2**63)]),
        ID=rng.randrange(5),
        CPUs=rng.choice([0, 127, 128, 2**32 - 1]),
        HSMs=rng.sample(["a", "b", "c"], rng.randrange(4)),
    )
    for node in rng.sample(range(300), rng.randrange(6)):
        status.Nodes[node] = rng.choice(["", "h:7373"])
    if rng.random() < 0.5:
        status.UpTime.FromNanoseconds(rng.randrange(10**12))
    if rng.random() < 0.3:
        status.LastHeartbeat.SetInParent()
    return status


class EncoderTests(SynchronousTestCase):
    """encode_message and the field-by-field encoder."""

    def test_which_types(self):
        """Only the types holding integer-keyed maps take the slow path."""
        slow = {
            name for name, descriptor in pb.DESCRIPTOR.message_types_by_name.items() if needs_field_order(descriptor)
        }
        self.assertEqual(slow, {"ServerStatusResponse", "ClusterStatusResponse"})

    def test_integer_keys_ascending(self):
        """Entries in ascending key order, zero key and empty value written."""
        cluster = pb.ClusterStatusResponse()
        cluster.NodesDown[2] = "b"
        cluster.NodesDown[0] = ""
        cluster.NodesDown[1] = "a"
        self.assertEqual(
            encode_message(cluster).hex(),
            "1204080012001205080112016112050802120162",
        )

    def test_agrees_with_upb_without_maps(self):
        """Without map entries both encoders give the same bytes."""
        rng = random.Random(7)
        for _ in range(200):
            status = random_status(rng)
            status.ClearField("Nodes")
            self.assertEqual(encode_field_by_field(status), status.SerializeToString(deterministic=True))

    def test_agrees_with_upb_on_one_entry(self):
        """With at most one entry per map the order question does not arise."""
        rng = random.Random(8)
        for _ in range(200):
            cluster = pb.ClusterStatusResponse()
            status = random_status(rng)
            while len(status.Nodes) > 1:
                del status.Nodes[next(iter(status.Nodes))]
            cluster.NodesUp[rng.randrange(3)].CopyFrom(status)
            cluster.NodesDown[rng.randrange(3, 9)] = "x"
            self.assertEqual(encode_message(cluster), cluster.SerializeToString(deterministic=True))

    def test_round_trip(self):
        """Whatever we write parses back to the same message."""
        rng = random.Random(9)
        for _ in range(200):
            cluster = pb.ClusterStatusResponse()
            for node in rng.sample(range(40), rng.randrange(5)):
                cluster.NodesUp[node].CopyFrom(random_status(rng))
            for node in rng.sample(range(40, 80), rng.randrange(5)):
                cluster.NodesDown[node] = f"n{node}"
            data = encode_message(cluster)
            self.assertEqual(pb.ClusterStatusResponse.FromString(data), cluster)
            self.assertEqual(len(data), cluster.ByteSize())

    def test_packed_and_fast_path(self):
        """Other types use upb: packed repeated scalars, string map keys sorted bytewise."""
        self.assertEqual(
            encode_message(pb.EditClusterRequest(Host="h", RemoveIDs=[3, 300])).hex(),
            "0a0168120303ac02",
        )
        identity = pb.CreateIdentityRequest()
        identity.Tags.update({"b": "", "B": "", "a": ""})
        self.assertEqual(
            encode_message(identity).hex(),
            "22050a0142120022050a0161120022050a01621200",
        )
