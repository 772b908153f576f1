"""
The real KMS state machine (L{minkms.state.machine.StateMachine}) behind
the simulator's L{StateMachine} protocol, and the workload that feeds it.

Client writes become real encoded KMS commands, proposed by a fixed
SysAdmin identity in one enclave: the first write of a run creates the
enclave, later ones create a key, add a version to it (creating it if
need be) or delete its latest version or all of them.  Key material comes
from the run's random generator, so it is fixed per seed.  A command's
time is the proposer's virtual clock in nanoseconds, and the nanoseconds
below the millisecond carry the client's op id: every command is unique
and the checker can tell which client write an entry is.

Entries reach the state machine as the server's node feeds them: the
commands in normal entries only, decoded by the same codec.  A read is C{KEY:STATUS} of the latest
version, answered as version, key type and a digest of the material, or
as the error a client would get.
"""

import random

from minkms.apikey import APIKey
from minkms.errors import KMSError
from minkms.hsm import SoftHSM
from minkms.raft.types import ENTRY_NORMAL, Entry
from minkms.sim.history import Operation
from minkms.sim.kmsmodel import KeyRingModel, describe_error, describe_key
from minkms.sim.statemachine import MachineKind
from minkms.state import changes, reads
from minkms.state.machine import StateMachine

ENCLAVE = "sim"
SYSADMIN = APIKey.parse(SoftHSM(b"minkms-sim-hsm-key-for-all-runs!").sysadmin_api_key()).identity
EPOCH_MS = 1_700_000_000_000
OP_IDS = 1_000_000
KEY_TYPES = ("", "", "AES256", "ChaCha20")


class KMSMachine:
    """
    A replica's KMS state plus the bookkeeping the simulator needs.

    @ivar kms: the real state machine.
    @ivar applied_ops: the op ids of every client write applied, whether
        the KMS accepted it or answered an error.
    """

    def __init__(self) -> None:
        self.kms = StateMachine()
        self.applied_index = 0
        self.applied_ops: set[int] = set()
        self._digest: str | None = None

    def apply(self, entry: Entry) -> KMSError | None:
        """Apply one entry; a client write answers what the KMS answered."""
        if entry.index != self.applied_index + 1:
            raise AssertionError(f"applying entry {entry.index} after {self.applied_index}: out of order")
        self.applied_index = entry.index
        if entry.kind != ENTRY_NORMAL:
            return None
        command = changes.decode(entry.data)
        self.applied_ops.add(command.time % OP_IDS)
        self._digest = None
        return self.kms.apply(command)

    def read(self, key: str) -> str:
        """KEY:STATUS of C{key}'s latest version, as the checker compares it."""
        try:
            status = reads.key_status(self.kms.state, ENCLAVE, key)
        except KMSError as error:
            return describe_error(error)
        record = status.record
        return describe_key(status.version, record.key_type, record.material)

    def digest(self) -> str:
        """The real state machine's digest (SHA-256 of its snapshot)."""
        if self._digest is None:
            self._digest = self.kms.digest()
        return self._digest

    def snapshot(self) -> bytes:
        """A header line (index, applied ops) and the real snapshot."""
        ops = ",".join(map(str, sorted(self.applied_ops)))
        return f"{self.applied_index};{ops}\n".encode() + self.kms.snapshot()

    def restore(self, data: bytes) -> None:
        """Load a snapshot made by L{snapshot}."""
        header, state = data.split(b"\n", 1)
        index, ops = header.decode().split(";")
        self.kms.restore(state)
        self.applied_index = int(index)
        self.applied_ops = {int(op) for op in ops.split(",")} if ops else set()
        self._digest = None


def write_id(data: bytes) -> int:
    """The op id a workload command carries in its time."""
    return changes.decode(data).time % OP_IDS


class KMSWorkload:
    """Turns client writes into KMS commands, drawing choices from the run's generator."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = random.Random(rng.getrandbits(64))
        self._enclave_asked = False

    def encode(self, op: Operation, now: int) -> bytes:
        """The encoded KMS command for write C{op} proposed at C{now} ms."""
        if op.op_id >= OP_IDS:
            raise AssertionError(f"op id {op.op_id} does not fit below a millisecond")
        rng = self._rng
        time = (EPOCH_MS + now) * OP_IDS + op.op_id
        common = {"caller": SYSADMIN, "sysadmin": True, "time": time}
        if not self._enclave_asked or rng.random() < 0.02:
            self._enclave_asked = True
            return changes.CreateEnclave(name=ENCLAVE, **common).encode()
        roll = rng.random()
        if roll < 0.65:
            command = changes.CreateKey(
                enclave=ENCLAVE,
                name=op.key,
                key_type=rng.choice(KEY_TYPES),
                add_version=roll >= 0.25,
                material=rng.randbytes(32),
                **common,
            )
        else:
            command = changes.DeleteKey(enclave=ENCLAVE, name=op.key, version=0, all_versions=roll >= 0.95, **common)
        return command.encode()

    def write_id(self, data: bytes) -> int:
        """See L{write_id}."""
        return write_id(data)


KMS = MachineKind("kms", KMSMachine, KeyRingModel, KMSWorkload)
