"""
The checker's reference model of the KMS commands the simulator sends.

It knows only what the workload does with keys (create, add a version,
delete the latest version or all) and nothing of L{minkms.state}, so that
replaying the committed log through it checks the real state machine's
answers and reads independently: version numbers continue after deletes,
even of the whole key; an empty key type keeps the key's type; creating an
existing key, or anything before the enclave exists, fails.
"""

import hashlib

from minkms.errors import (
    ErrEnclaveExists,
    ErrEnclaveNotFound,
    ErrKeyExists,
    ErrKeyNotFound,
    KMSError,
)
from minkms.raft.types import ENTRY_NORMAL, Entry
from minkms.state import changes

DEFAULT_KEY_TYPE = "AES256"


def describe_key(version: int, key_type: str, material: bytes) -> str:
    """A read result: the latest version, its type and a fingerprint of its material."""
    return f"v{version} {key_type} {hashlib.sha256(material).hexdigest()[:16]}"


def describe_error(error: KMSError) -> str:
    """A read result for a read that fails."""
    return f"{error.status} {error.message}"


class KeyRingModel:
    """
    Key rings as lists of live versions, plus the highest version each
    name ever had.
    """

    def __init__(self) -> None:
        self.enclave = False
        self.keys: dict[str, list[tuple[int, str, bytes]]] = {}
        self.highest: dict[str, int] = {}

    def apply(self, entry: Entry) -> KMSError | None:
        """The answer the KMS must give to C{entry}'s command."""
        if entry.kind != ENTRY_NORMAL:
            return None
        command = changes.decode(entry.data)
        if isinstance(command, changes.CreateEnclave):
            if self.enclave:
                return ErrEnclaveExists
            self.enclave = True
            return None
        if not self.enclave:
            return ErrEnclaveNotFound
        name = command.name
        versions = self.keys.get(name)
        if isinstance(command, changes.CreateKey):
            if versions and not command.add_version:
                return ErrKeyExists
            key_type = command.key_type or (versions[-1][1] if versions else DEFAULT_KEY_TYPE)
            version = self.highest.get(name, 0) + 1
            self.keys.setdefault(name, []).append((version, key_type, command.material))
            self.highest[name] = version
            return None
        if isinstance(command, changes.DeleteKey):
            if not versions:
                return ErrKeyNotFound
            if command.all_versions:
                versions.clear()
            else:
                versions.pop()
            if not versions:
                del self.keys[name]
            return None
        raise AssertionError(f"the model does not know {type(command).__name__}")

    def read(self, key: str) -> str:
        """KEY:STATUS of C{key} as the KMS must answer it."""
        if not self.enclave:
            return describe_error(ErrEnclaveNotFound)
        versions = self.keys.get(key)
        if not versions:
            return describe_error(ErrKeyNotFound)
        return describe_key(*versions[-1])
