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
import heapq
import itertools
import json
import struct
from collections.abc import Iterator
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, TypeVar

from minkms.state.model import (
    Enclave,
    Identity,
    KeyRing,
    KeyVersion,
    Policy,
    Rules,
    State,
    unpack_version,
)

FORMAT_VERSION = 1

_V = TypeVar("_V")


class SnapshotError(ValueError):
    """Bytes that are not a snapshot of this format."""


def _rules_doc(rules: Rules) -> dict[str, Any]:
    return {action: list(patterns) for action, patterns in rules.items()}


def _key_json(ring: KeyRing, highest: int) -> str:
    """
    The canonical JSON of a key ring, written out rather than built as a
    document and encoded: a dump writes every key, and this costs about 40%
    less per key, unpacking included (3.6 against 6 µs).
    C{test_snapshot_is_canonical_json} holds it to the form C{json} gives.
    """
    versions = []
    for number in sorted(ring, key=str):
        material, key_type, created_at, created_by, imported = unpack_version(ring[number])
        versions.append(
            f'"{number}":{{"created_at":{created_at},"created_by":{_quote(created_by)},'
            f'"imported":{"true" if imported else "false"},'
            f'"material":"{base64.b64encode(material).decode("ascii")}","type":{_quote(key_type)}}}'
        )
    return f'{{"highest":{highest},"versions":{{{",".join(versions)}}}}}'


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


KEYS_PER_PIECE = 128
"""Keys per piece of L{dump_pieces}: about a millisecond of work each."""

SORT_RUN = 4096
"""Key names sorted in one step of L{dump_pieces}; an enclave with more is sorted in runs, then merged."""


def _enclave_ends(e: Enclave) -> tuple[str, str]:
    """
    The canonical JSON of an enclave but its keys, cut where C{"keys"}
    sorts in (between C{"identities"} and C{"policies"}): the text up to
    and including C{"keys":{}, and the text after the keys' closing brace.
    """
    doc = _enclave_doc_but_keys(e)
    before = _encode({k: v for k, v in doc.items() if k < "keys"})
    after = _encode({k: v for k, v in doc.items() if k > "keys"})
    return f'{before[:-1]},"keys":{{', f"}},{after[1:]}"


def dump_pieces(state: State, keys_per_piece: int = KEYS_PER_PIECE, sort_run: int = SORT_RUN) -> Iterator[bytes]:
    """
    L{dump}'s bytes in pieces, whose concatenation is L{dump}: a node
    serializes a large state a few pieces per reactor turn, so that the
    dump does not hold up heartbeats.  No piece costs much: one holds at
    most C{keys_per_piece} keys, and an enclave's key names are sorted
    C{sort_run} at a time (an empty piece after each run), then merged as
    they are written.  Sorting 240,000 names in one go held a node for
    up to 450 ms.
    """
    yield b'{"enclaves":{'
    for n, (name, e) in enumerate(sorted(state.enclaves.items())):
        before, after = _enclave_ends(e)
        yield f'{"," if n else ""}{_encode(name)}:{before}'.encode("ascii")
        names = list(e.keys)
        runs = []
        for start in range(0, len(names), sort_run):
            runs.append(sorted(names[start : start + sort_run]))
            yield b""
        ordered = heapq.merge(*runs)
        keys, highest, first = e.keys, e.highest, True
        while batch := list(itertools.islice(ordered, keys_per_piece)):
            piece = ",".join(f"{_quote(key)}:{_key_json(keys[key], highest[key])}" for key in batch)
            yield f'{"" if first else ","}{piece}'.encode("ascii")
            first = False
        yield after.encode("ascii")
    yield f'}},"format":{FORMAT_VERSION}}}'.encode("ascii")


def dump(state: State) -> bytes:
    """The canonical bytes of a state: sorted keys, no whitespace, ASCII."""
    return b"".join(dump_pieces(state))


def _sorted(mapping: dict[str, _V]) -> dict[str, _V]:
    return dict(sorted(mapping.items()))


def _exactly(kind: type, value: Any) -> Any:
    """C{value} if it is of C{kind} exactly (C{True} is no integer here), else TypeError."""
    if type(value) is not kind:
        raise TypeError(f"expected {kind.__name__}, not {value!r}")
    return value


def _ring(doc: dict[str, Any]) -> KeyRing:
    versions = {
        int(n): KeyVersion(
            base64.b64decode(v["material"], validate=True),
            _exactly(str, v["type"]),
            _exactly(int, v["created_at"]),
            _exactly(str, v["created_by"]),
            _exactly(bool, v["imported"]),
        ).pack()
        for n, v in doc["versions"].items()
    }
    return dict(sorted(versions.items()))


def _enclave(name: str, doc: dict[str, Any]) -> Enclave:
    keys = _sorted(doc["keys"])
    return Enclave(
        name,
        doc["created_at"],
        doc["created_by"],
        keys={k: _ring(d) for k, d in keys.items()},
        highest={k: _exactly(int, d["highest"]) for k, d in keys.items()},
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
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error, struct.error) as e:
        raise SnapshotError(f"invalid state snapshot: {e!r}") from None
    return State(enclaves)
