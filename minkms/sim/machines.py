"""The kinds of state machine a run can drive, by the name C{--machine} takes."""

from minkms.sim.kmsmachine import KMS
from minkms.sim.statemachine import REGISTER, MachineKind

MACHINES: dict[str, MachineKind] = {kind.name: kind for kind in (REGISTER, KMS)}


def machine_for(seed: int) -> str:
    """The machine a sweep over both uses for C{seed}: register and KMS in turn."""
    return ("register", "kms")[seed % 2]
