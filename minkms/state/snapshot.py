"""
The byte form of the whole state, for Raft snapshots, C{/v1/db} and
cross-node comparison.

Canonical UTF-8 JSON (sorted keys, no whitespace, bytes as standard base64,
integer map keys as decimal strings), so that equal states give equal
bytes.  The bytes contain key material in the clear: storage seals them.
"""

import base64
import binascii
import contextlib
import gc
import json
from collections.abc import Iterator
from typing import Any, TypeVar

from minkms.state.model import (
    Enclave,
    Identity,
    Key,
    KeyVersion,
    Policy,
    Rules,
    State,
)

FORMAT_VERSION = 1

_V = TypeVar("_V")


class SnapshotError(ValueError):
    """Bytes that are not a snapshot of this format."""


def _version_doc(v: KeyVersion) -> dict[str, Any]:
    return {
        "material": base64.b64encode(v.material).decode("ascii"),
        "type": v.key_type,
        "created_at": v.created_at,
        "created_by": v.created_by,
        "imported": v.imported,
    }


def _rules_doc(rules: Rules) -> dict[str, Any]:
    return {action: list(patterns) for action, patterns in rules.items()}


def _key_doc(key: Key) -> dict[str, Any]:
    return {
        "highest": key.highest,
        "versions": {str(n): _version_doc(v) for n, v in key.versions.items()},
    }


def _enclave_doc_but_keys(e: Enclave) -> dict[str, Any]:
    """Everything of an enclave but its keys, which L{_enclave_json} writes one by one."""
    return {
        "created_at": e.created_at,
        "created_by": e.created_by,
        "retired_keys": dict(e.retired_keys),
        "policies": {
            name: {
                "allow": _rules_doc(p.allow),
                "deny": _rules_doc(p.deny),
                "created_at": p.created_at,
                "created_by": p.created_by,
            }
            for name, p in e.policies.items()
        },
        "identities": {
            name: {
                "privilege": i.privilege,
                "created_at": i.created_at,
                "created_by": i.created_by,
                "policy": i.policy,
                "service_account": i.service_account,
                "parent": i.parent,
                "tags": dict(i.tags),
            }
            for name, i in e.identities.items()
        },
    }


_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def _enclave_json(e: Enclave) -> str:
    """
    The canonical JSON of an enclave, its keys written one call each: a
    dump on another thread then lets the reactor run between two keys,
    where one call for the whole state would hold the interpreter for a
    second at 100,000 keys.  "keys" sorts between "identities" and
    "policies", where it is spliced in.
    """
    doc = _enclave_doc_but_keys(e)
    before = _encode({k: v for k, v in doc.items() if k < "keys"})
    after = _encode({k: v for k, v in doc.items() if k > "keys"})
    keys = []
    for name, key in sorted(e.keys.items()):
        keys.append(f"{_encode(name)}:{_encode(_key_doc(key))}")
    return f'{before[:-1]},"keys":{{{",".join(keys)}}},{after[1:]}'


def dump(state: State) -> bytes:
    """The canonical bytes of a state: sorted keys, no whitespace, ASCII."""
    enclaves = [f"{_encode(name)}:{_enclave_json(e)}" for name, e in sorted(state.enclaves.items())]
    return f'{{"enclaves":{{{",".join(enclaves)}}},"format":{FORMAT_VERSION}}}'.encode("ascii")


def _sorted(mapping: dict[str, _V]) -> dict[str, _V]:
    return dict(sorted(mapping.items()))


def _key(name: str, doc: dict[str, Any]) -> Key:
    versions = {
        int(n): KeyVersion(
            base64.b64decode(v["material"], validate=True),
            v["type"],
            v["created_at"],
            v["created_by"],
            v["imported"],
        )
        for n, v in doc["versions"].items()
    }
    return Key(name, dict(sorted(versions.items())), doc["highest"])


def _enclave(name: str, doc: dict[str, Any]) -> Enclave:
    return Enclave(
        name,
        doc["created_at"],
        doc["created_by"],
        keys=_sorted({k: _key(k, d) for k, d in doc["keys"].items()}),
        retired_keys=_sorted(doc["retired_keys"]),
        policies=_sorted(
            {
                p: Policy(
                    p,
                    {a: tuple(ps) for a, ps in d["allow"].items()},
                    {a: tuple(ps) for a, ps in d["deny"].items()},
                    d["created_at"],
                    d["created_by"],
                )
                for p, d in doc["policies"].items()
            }
        ),
        identities=_sorted(
            {
                i: Identity(
                    identity=i,
                    privilege=d["privilege"],
                    created_at=d["created_at"],
                    created_by=d["created_by"],
                    policy=d["policy"],
                    service_account=d["service_account"],
                    parent=d["parent"],
                    tags=dict(d["tags"]),
                )
                for i, d in doc["identities"].items()
            }
        ),
    )


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """
    Keep Python's cycle collector from running while a state is built: it
    would walk the growing state again and again (at 100,000 keys it more
    than doubles the time of L{load}).  Nothing built here is cyclic.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(data: bytes) -> State:
    """
    Rebuild a state from L{dump}'s bytes.

    @raise SnapshotError: when the bytes are not a snapshot.
    """
    with _collector_paused():
        return _load(data)


def _load(data: bytes) -> State:
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
        if doc["format"] != FORMAT_VERSION:
            raise SnapshotError(f"unsupported snapshot format {doc['format']!r}")
        enclaves = {n: _enclave(n, e) for n, e in sorted(doc["enclaves"].items())}
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as e:
        raise SnapshotError(f"invalid state snapshot: {e!r}") from None
    return State(enclaves)
