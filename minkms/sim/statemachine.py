"""
The state machines the simulator can drive, and the register store it
ships.

A state machine for the simulator applies committed entries in order,
snapshots itself to bytes, restores from those bytes, and exposes a digest
that two replicas share exactly when they reached the same state.  A
L{MachineKind} bundles one with what else a run needs: a workload that
turns client writes into entry data, and a reference model the checker
replays the committed log through.
"""

import hashlib
import json
import random
from collections.abc import Callable
from typing import Protocol

import attrs

from minkms.raft.config import EMPTY_CONFIG, ClusterConfig, decode_config, encode_config
from minkms.raft.types import ENTRY_CONFIG, ENTRY_NORMAL, Entry
from minkms.sim.history import Operation


class StateMachine(Protocol):
    """
    What the simulator needs from a replicated state machine.

    Client writes reach C{apply} as entries whose data the run's
    L{Workload} encoded; C{read} answers a client read of a key from the
    applied state.  The checker compares both with a L{Model}.
    """

    applied_index: int
    applied_ops: set[int]

    def read(self, key: str) -> str | None:
        """What a client reading C{key} is told now."""

    def apply(self, entry: Entry) -> object:
        """Apply the next committed entry; return the client's answer."""

    def snapshot(self) -> bytes:
        """The whole state as bytes."""

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a snapshot."""

    def digest(self) -> object:
        """A fingerprint of the state, equal on replicas in the same state."""


class Model(Protocol):
    """
    The checker's reference for one kind of state machine: replayed over
    the committed log, it says what each write should have answered and
    what each read should have returned at the index it was served at.
    """

    def apply(self, entry: Entry) -> object:
        """Apply the next committed entry; return the expected answer."""

    def read(self, key: str) -> str | None:
        """The expected answer to a read of C{key} now."""


class Workload(Protocol):
    """The client side of a run: what a client write puts into the log."""

    def encode(self, op: Operation, now: int) -> bytes:
        """The entry data for write C{op} proposed at virtual time C{now}."""

    def write_id(self, data: bytes) -> int:
        """The op id of the client write whose entry data is C{data}."""


@attrs.frozen
class MachineKind:
    """
    One kind of state machine and what a run needs to drive and check it.

    @ivar machine: makes a replica's state machine.
    @ivar model: makes the checker's reference model.
    @ivar workload: makes a run's workload from a random generator.
    """

    name: str
    machine: Callable[[], StateMachine]
    model: Callable[[], Model]
    workload: Callable[[random.Random], Workload]


def encode_write(op_id: int, key: str, value: str) -> bytes:
    """The entry data of a client write (the op id makes it idempotent)."""
    return json.dumps([op_id, key, value], separators=(",", ":")).encode()


def decode_write(data: bytes) -> tuple[int, str, str]:
    """The inverse of L{encode_write}."""
    op_id, key, value = json.loads(data)
    return op_id, key, value


class RegisterMachine:
    """
    A deterministic key -> value register store.

    Writes carry a client op id and apply at most once.  The digest is a
    hash chain over every applied entry (index, term, kind, data), so it
    proves the whole applied sequence, not just the final values.

    @ivar applied_ops: the op ids of every write applied so far.
    @ivar config: the membership as of the last applied configuration entry.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.applied_ops: set[int] = set()
        self.applied_index = 0
        self.config: ClusterConfig = EMPTY_CONFIG
        self._chain = b"\x00" * 32

    def apply(self, entry: Entry) -> object:
        """Apply one entry; a write answers True, a duplicate write False."""
        if entry.index != self.applied_index + 1:
            raise AssertionError(f"applying entry {entry.index} after {self.applied_index}: out of order")
        self.applied_index = entry.index
        header = b"%d:%d:%d:" % (entry.index, entry.term, entry.kind)
        self._chain = hashlib.sha256(self._chain + header + entry.data).digest()
        if entry.kind == ENTRY_CONFIG:
            self.config = decode_config(entry.data)
        elif entry.kind == ENTRY_NORMAL:
            op_id, key, value = decode_write(entry.data)
            if op_id in self.applied_ops:
                return False
            self.applied_ops.add(op_id)
            self.values[key] = value
            return True
        return None

    def read(self, key: str) -> str | None:
        """The current value of C{key}."""
        return self.values.get(key)

    def digest(self) -> bytes:
        """The hash chain over the applied sequence."""
        return self._chain

    def snapshot(self) -> bytes:
        """Canonical JSON of the whole state."""
        document = {
            "values": dict(sorted(self.values.items())),
            "ops": sorted(self.applied_ops),
            "index": self.applied_index,
            "chain": self._chain.hex(),
            "config": self._config_bytes(),
        }
        return json.dumps(document, separators=(",", ":")).encode()

    def restore(self, data: bytes) -> None:
        """Load a snapshot made by L{snapshot}."""
        document = json.loads(data)
        self.values = dict(document["values"])
        self.applied_ops = set(document["ops"])
        self.applied_index = document["index"]
        self._chain = bytes.fromhex(document["chain"])
        self.config = decode_config(document["config"].encode())

    def _config_bytes(self) -> str:
        return encode_config(self.config).decode() if self.config != EMPTY_CONFIG else ""


class RegisterWorkload:
    """Client writes as register writes: C{(op id, key, unique value)}."""

    def __init__(self, rng: random.Random) -> None:
        pass

    def encode(self, op: Operation, now: int) -> bytes:
        """L{encode_write} of the op."""
        return encode_write(op.op_id, op.key, op.value)

    def write_id(self, data: bytes) -> int:
        """The op id inside a register write."""
        return decode_write(data)[0]


REGISTER = MachineKind("register", RegisterMachine, RegisterMachine, RegisterWorkload)
