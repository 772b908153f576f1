"""
Shared fixtures of the state-machine and dispatch tests (no tests here):
made-up identities and a driver that applies commands with a moving clock.
"""

import base64
import hashlib

import attrs

from minkms.state import changes as sc
from minkms.state.machine import StateMachine

T0 = 1_700_000_000_000_000_000


def ident(label: str) -> str:
    """A well-formed C{h1:} identity named by a label, stable across runs."""
    digest = hashlib.sha256(label.encode()).digest()
    return "h1:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def material(label: str) -> bytes:
    """32 bytes of key material named by a label."""
    return hashlib.sha256(b"material:" + label.encode()).digest()


ROOT = ident("sysadmin")
ADMIN = ident("admin")
USER = ident("user")
OTHER = ident("other")

_DEFAULTS = {
    "key_type": "",
    "add_version": False,
    "version": 0,
    "all_versions": False,
    "privilege": "",
    "service_account": False,
    "tags": {},
    "allow": {},
    "deny": {},
}


class Driver:
    """
    A state machine plus a clock: builds client commands, stamps them and
    applies them, remembering the encoded log.
    """

    def __init__(self) -> None:
        self.machine = StateMachine()
        self.now = T0
        self.log: list[bytes] = []

    @property
    def state(self):
        """The applied state."""
        return self.machine.state

    def command(self, cls, caller=ROOT, sysadmin=None, **fields):
        """A client command of type C{cls}, stamped one second later than the last."""
        self.now += 1_000_000_000
        if sysadmin is None:
            sysadmin = caller == ROOT
        names = {f.name for f in attrs.fields(cls)}
        if "material" in names and "material" not in fields:
            fields["material"] = material(f"{fields.get('name')}@{self.now}")
        for name, default in _DEFAULTS.items():
            if name in names and name not in fields:
                fields[name] = default
        if not issubclass(cls, sc.ClientCommand):
            return cls(**fields)
        return cls(caller=caller, sysadmin=sysadmin, time=self.now, **fields)

    def apply(self, cls, caller=ROOT, sysadmin=None, **fields):
        """Apply one command through its encoded bytes; return the result."""
        data = self.command(cls, caller, sysadmin, **fields).encode()
        self.log.append(data)
        return self.machine.apply(data)

    def ok(self, cls, caller=ROOT, sysadmin=None, **fields):
        """Apply one command that must succeed."""
        result = self.apply(cls, caller, sysadmin, **fields)
        if result is not None:
            raise AssertionError(f"{cls.__name__} {fields} failed: {result!r}")

    def setup(self) -> "Driver":
        """Enclaves e1 and e2, an Admin and a User in e1, an Admin in e2."""
        self.ok(sc.CreateEnclave, name="e1")
        self.ok(sc.CreateEnclave, name="e2")
        self.ok(sc.CreateIdentity, enclave="e1", identity=ADMIN, privilege="Admin")
        self.ok(sc.CreateIdentity, enclave="e1", identity=USER, privilege="User")
        self.ok(sc.CreateIdentity, enclave="e2", identity=OTHER, privilege="Admin")
        return self
