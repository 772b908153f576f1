"""
The state machines the simulator can drive, and the one it ships.

A state machine for the simulator applies committed entries in order,
snapshots itself to bytes, restores from those bytes, and exposes a digest
that two replicas share exactly when they applied the same sequence.  The
KMS state machine will plug in through the same L{StateMachine} protocol.
"""

import hashlib
import json
from typing import Protocol

from minkms.raft.config import EMPTY_CONFIG, ClusterConfig, decode_config, encode_config
from minkms.raft.types import ENTRY_CONFIG, ENTRY_NORMAL, Entry


class StateMachine(Protocol):
    """
    What the simulator needs from a replicated state machine.

    Client writes reach C{apply} as entries whose data is
    L{encode_write}C{(op_id, key, value)}; a state machine with its own
    command language (the KMS one) plugs in through an adapter that turns
    these into its commands, and reports which writes it applied and what a
    key holds, so that the checker can verify acknowledged writes and reads.
    """

    applied_index: int
    applied_ops: set[int]

    def read(self, key: str) -> str | None:
        """The value the last applied write to C{key} wrote."""

    def apply(self, entry: Entry) -> object:
        """Apply the next committed entry; return the client's answer."""

    def snapshot(self) -> bytes:
        """The whole state as bytes."""

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a snapshot."""

    def digest(self) -> bytes:
        """A fingerprint of the applied sequence."""


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
            raise AssertionError(
                f"applying entry {entry.index} after {self.applied_index}: out of order"
            )
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
