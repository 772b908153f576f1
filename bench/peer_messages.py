"""
The CPU one Raft message costs on the peer channel, without the network:
on the sending node the codec's C{encode} and the AMP box written to the
connection, on the receiving node AMP's parse and dispatch, the
C{RaftMessage} responder and the codec's C{decode}.  TLS is left out (it
costs the same per write whatever the box holds).

For typical messages of a write (an Append of one and of eight ~300-byte
entries, its AppendResponse, a Heartbeat) it prints microseconds per
message for each half and in all, the best of a few rounds.  Figures only:
this never fails.

    .venv/bin/python bench/peer_messages.py [--seconds 2]
"""

import argparse
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from twisted.internet.testing import StringTransport  # noqa: E402

from minkms.raft import codec  # noqa: E402
from minkms.raft.messages import Append, AppendResponse, Heartbeat  # noqa: E402
from minkms.raft.types import Entry  # noqa: E402
from minkms.server import peer  # noqa: E402

ENTRY = b"\x5a" * 300


def _append(entries: int) -> Append:
    return Append(
        0,
        1,
        3,
        prev_index=41_000,
        prev_term=3,
        commit=40_990,
        entries=tuple(Entry(41_001 + i, 3, 0, ENTRY) for i in range(entries)),
        acked=40_990,
    )


MESSAGES = [
    ("Append, 1 entry", _append(1)),
    ("Append, 8 entries", _append(8)),
    ("AppendResponse", AppendResponse(1, 0, 3, index=41_008)),
    ("Heartbeat", Heartbeat(0, 1, 3, commit=41_008, context=77, acked=41_008)),
]


class _Receiver:
    """The receiving node, reduced to what the peer channel calls: it decodes what arrives."""

    def __init__(self) -> None:
        self.received = 0

    def receive_raft(self, data: bytes, via=None) -> None:
        codec.decode(data)
        self.received += 1


def _connected(node) -> tuple[peer.PeerProtocol, StringTransport]:
    protocol = peer.PeerProtocol(node, "", server_side=True)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def _rate(function, seconds: float, rounds: int = 5) -> float:
    """The best time of one call to C{function}, in microseconds, over C{rounds} rounds."""
    batch = 200
    best = float("inf")
    for _ in range(rounds):
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds / rounds
        while True:
            for _ in range(batch):
                function()
            calls += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        best = min(best, (now - start) / calls * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per figure")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'message':<20} {'bytes':>6} {'encode':>8} {'send':>8} {'receive':>8} {'decode':>8} {'total':>8}  (µs)")
    sender, out = _connected(None)
    node = _Receiver()
    receiver, _ = _connected(node)
    for name, message in MESSAGES:
        data = codec.encode(message)
        assert codec.decode(data) == message

        def encode(message=message):
            codec.encode(message)

        def send(data=data):
            sender.send_raft(data)
            out.clear()

        sender.send_raft(data)
        wire = out.value()
        out.clear()

        def receive(wire=wire):
            receiver.dataReceived(wire)

        def decode(data=data):
            codec.decode(data)

        before = node.received
        receive()
        assert node.received == before + 1, "the receiver did not get the message"
        figures = [_rate(f, args.seconds / 4) for f in (encode, send, receive)]
        decode_us = _rate(decode, args.seconds / 4)
        total = figures[0] + figures[1] + figures[2]
        print(
            f"{name:<20} {len(data):>6} {figures[0]:>8.2f} {figures[1]:>8.2f} {figures[2]:>8.2f} "
            f"{decode_us:>8.2f} {total:>8.2f}"
        )
    print("send: the AMP box made and written (after encode); receive: parsed, dispatched, decoded (decode also alone)")


if __name__ == "__main__":
    main()
