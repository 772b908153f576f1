"""
The audit trail as a hash chain with periodic HMAC seals.

One record is one line of JSON.  Every record carries C{seq} (one more
than the record before it), C{prev} (the C{h} of the record before it) and
C{h}, the SHA-256 of its own canonical form without C{h}.  So an edited
record no longer matches its own C{h}, a deleted or moved record breaks
the run of C{seq} numbers, and a record rewritten with a fresh C{h} no
longer matches the C{prev} of its successor.  Someone who rewrites the
whole tail consistently is caught by the seals: a C{seal} record carries
an HMAC, under a key derived from the HSM key, of its own canonical form,
which includes C{prev}, hence the whole chain before it.

Records after the last seal are only hash-chained; L{verify} reports how
many there are.
"""

import hashlib
import hmac
import json

import attrs

KIND_REQUEST = "request"
KIND_SEAL = "seal"
KIND_START = "start"
"""The first record a writer appends when it cannot continue an old chain."""

GENESIS = ""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""One encoder for every record: C{json.dumps} with options builds a new one per call."""


def canonical(fields: dict) -> bytes:
    """The bytes hashed and MACed: sorted keys, no spaces, UTF-8."""
    return _CANONICAL.encode(fields).encode("utf-8")


def record_hash(fields: dict) -> str:
    """The C{h} of a record: the SHA-256 of its canonical form without C{h}."""
    body = {k: v for k, v in fields.items() if k != "h"}
    return hashlib.sha256(canonical(body)).hexdigest()


def _mac(key: bytes, fields: dict) -> str:
    body = {k: v for k, v in fields.items() if k not in ("h", "mac")}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


@attrs.define
class ChainHead:
    """Where a chain ends: the next record's C{seq} and C{prev}."""

    seq: int = 0
    prev: str = GENESIS


def link(head: ChainHead, fields: dict, seal_key: bytes | None = None) -> bytes:
    """
    Chain C{fields} onto C{head} (which advances) and return the record's
    line (JSON and a newline).  With C{seal_key} the record is a seal.
    The line is the canonical form with C{h} appended last, so it is
    serialized once.
    """
    record = dict(fields)
    record["seq"] = head.seq
    record["prev"] = head.prev
    if seal_key is not None:
        record["kind"] = KIND_SEAL
        record["mac"] = _mac(seal_key, record)
    body = canonical(record)
    digest = hashlib.sha256(body).hexdigest()
    head.seq += 1
    head.prev = digest
    return body[:-1] + b',"h":"' + digest.encode("ascii") + b'"}\n'


def head_after(line: bytes) -> ChainHead | None:
    """The head that continues after the record C{line}, or None if it is not one."""
    try:
        record = json.loads(line)
        return ChainHead(int(record["seq"]) + 1, str(record["h"]))
    except (ValueError, KeyError, TypeError):
        return None


@attrs.frozen
class Problem:
    """The first bad record: its file, line number, C{seq} if readable, and why."""

    file: str
    line: int
    seq: int | None
    reason: str

    def __str__(self) -> str:
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{self.file}:{self.line}: record{seq}: {self.reason}"


@attrs.frozen
class Report:
    """What L{verify} found."""

    records: int
    seals: int
    unsealed_tail: int
    seals_checked: bool
    problem: Problem | None


def verify(files, seal_key: bytes | None = None) -> Report:
    """
    Check the records of C{files} (C{(name, bytes)} pairs, oldest first)
    as one chain, and name the first bad record.  Without C{seal_key} the
    seals' HMACs are not checked (only their place in the chain).
    """
    expect: ChainHead | None = None
    before = None
    records = seals = since_seal = 0
    for name, data in files:
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for number, line in enumerate(lines, 1):
            problem = _check(name, number, line, expect, seal_key)
            if isinstance(problem, Problem) and problem.reason == _REPLACED and before is not None:
                problem = Problem(*before, "replaced: the record after it chains to another hash")
            if isinstance(problem, Problem):
                return Report(records, seals, since_seal, seal_key is not None, problem)
            record = problem
            records += 1
            if record.get("kind") == KIND_SEAL:
                seals += 1
                since_seal = 0
            else:
                since_seal += 1
            expect = ChainHead(record["seq"] + 1, record["h"])
            before = (name, number, record["seq"])
    return Report(records, seals, since_seal, seal_key is not None, None)


_REPLACED = "does not follow the record before it"


def _check(name, number, line, expect, seal_key):
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError
    except ValueError:
        return Problem(name, number, None, "not a JSON record (edited or truncated)")
    seq = record.get("seq")
    if not isinstance(seq, int) or not isinstance(record.get("h"), str) or not isinstance(record.get("prev"), str):
        return Problem(name, number, None, "missing seq, prev or h (edited)")
    if record_hash(record) != record["h"]:
        return Problem(name, number, seq, "content does not match its hash (edited)")
    if expect is None:
        if record.get("kind") == KIND_START and (seq != 0 or record["prev"] != GENESIS):
            return Problem(name, number, seq, "start record in the middle of a chain")
    else:
        if seq != expect.seq:
            how = "missing before it (deleted)" if seq > expect.seq else "out of order (reordered or duplicated)"
            return Problem(name, number, seq, f"expected seq {expect.seq}: record {how}")
        if record["prev"] != expect.prev:
            return Problem(name, number, seq, _REPLACED)
    if record.get("kind") == KIND_SEAL and seal_key is not None:
        if not hmac.compare_digest(str(record.get("mac", "")), _mac(seal_key, record)):
            return Problem(
                name,
                number,
                seq,
                "seal does not verify: the records before it were rewritten, or the HSM key is not this cluster's",
            )
    return record
