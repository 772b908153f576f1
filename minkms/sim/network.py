"""
A simulated, faulty peer network.

Messages really go through the wire codec (so its size bound is checked on
every message) and are then dropped, delayed, duplicated or reordered as
the current fault settings say.  Links are directed, so a partition may be
one-way; a crashed or removed node receives nothing.
"""

import random
from collections.abc import Callable

import attrs

from minkms.raft import codec
from minkms.raft.messages import Message
from minkms.sim.clock import Scheduler


@attrs.define
class LinkFaults:
    """
    How the network misbehaves right now.

    @ivar drop: probability that a message is lost.
    @ivar duplicate: probability that a message is delivered twice.
    @ivar min_delay: the smallest one-way delay (ms).
    @ivar max_delay: the largest usual one-way delay (ms); larger delays
        (reordering) happen with probability C{slow}.
    @ivar slow: probability of a delay of up to 10 x C{max_delay}.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay: int = 1
    max_delay: int = 5
    slow: float = 0.0


class SimNetwork:
    """
    Carries encoded messages between nodes with virtual delays.

    @ivar blocked: directed links (src, dst) that lose every message.
    @ivar sent, delivered, bytes_sent: statistics.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        deliver: Callable[[int, Message], None],
    ) -> None:
        self._scheduler = scheduler
        self._rng = rng
        self._deliver = deliver
        self.faults = LinkFaults()
        self.blocked: set[tuple[int, int]] = set()
        self.sent = 0
        self.delivered = 0
        self.bytes_sent = 0
        self.largest = 0

    def send(self, message: Message) -> None:
        """Put C{message} on the wire."""
        data = codec.encode(message)
        size = len(data)
        if size > codec.MAX_MESSAGE_BYTES:
            raise AssertionError(f"encoded {type(message).__name__} of {size} bytes is too large")
        self.sent += 1
        self.bytes_sent += size
        self.largest = max(self.largest, size)
        if (message.src, message.dst) in self.blocked:
            return
        faults, rng = self.faults, self._rng
        if faults.drop and rng.random() < faults.drop:
            return
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        for _ in range(copies):
            delay = rng.randint(faults.min_delay, faults.max_delay)
            if faults.slow and rng.random() < faults.slow:
                delay = rng.randint(faults.max_delay, faults.max_delay * 10)
            self._scheduler.after(delay, self._arrive, message.src, message.dst, data)

    def _arrive(self, src: int, dst: int, data: bytes) -> None:
        if (src, dst) in self.blocked:
            return
        self.delivered += 1
        self._deliver(dst, codec.decode(data))

    def isolate(self, node: int, others: list[int]) -> None:
        """Cut every link to and from C{node}."""
        for other in others:
            if other != node:
                self.blocked.add((node, other))
                self.blocked.add((other, node))

    def split(self, side_a: list[int], side_b: list[int], one_way: bool = False) -> None:
        """Cut the links from C{side_a} to C{side_b} (and back unless C{one_way})."""
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                if not one_way:
                    self.blocked.add((b, a))

    def heal(self) -> None:
        """Restore every link."""
        self.blocked.clear()
