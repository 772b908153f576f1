"""
The fault suite's checker: the recorded history against models of the
KMS objects (L{minkms.sim.linearizability}, one object at a time), plus
what a history alone cannot show: listings, the final state on every node,
server logs, 500 answers.

Anomalies are counted by class.  A read that missed a write acknowledged
before it began is its own class, L{STALE_READ}: until follower read
leases land (issue 8) nodes serve reads from their own state.
"""

import collections
import re

import attrs

from minkms.errors import ErrIdentityNotFound, ErrKeyExists, ErrKeyNotFound, ErrPolicyNotFound
from minkms.sim import linearizability as lin
from tests.faults.workload import OK, UNKNOWN, WRITES, Record

STALE_READ = "stale read"
NOT_LINEARIZABLE = "not linearizable"
STALE_REJECTION = "write refused on a stale state"
STALE_OR_WORSE = "not linearizable, stale reads may explain it (undecided)"
LOST_WRITE = "acknowledged write missing"
PHANTOM = "present but never attempted"
DISAGREE = "nodes disagree"
ANSWERED_500 = "500 answered"
TRACEBACK = "traceback not caused by the nemesis"
NODE_EXITED = "node exited by itself"
DECRYPT = "decrypt mismatch"
FINAL_READ = "final read failed"

CREATES = ("import", "create", "rotate")
FAMILY = {
    "import": "key",
    "create": "key",
    "rotate": "key",
    "delete": "key",
    "status": "key",
    "generate": "key",
    "encrypt": "key",
    "id_create": "identity",
    "id_delete": "identity",
    "assign": "identity",
    "id_status": "identity",
    "pol_create": "policy",
    "pol_delete": "policy",
    "pol_get": "policy",
}
NEMESIS_CAUSES = ("No space left on device", "storage failed")
"""Words in a traceback that the full-disk fault explains."""


class ObjectModel:
    """
    One KMS object as the server's state machine defines it.  A key is
    C{(latest (version, material), highest version ever)}, where material
    is the import's op ID (None when the server made it); an identity is
    its policy; a policy is its marker.  Absent is C{None}.
    """

    def init(self):
        return None

    def step(self, state, op: lin.Op):
        answer, after = self.apply(op.key[0], state, op.input)
        return op.output is lin.NOT_OBSERVED or op.output == answer, after

    @staticmethod
    def apply(family, state, command):
        kind = command[0]
        if family == "key":
            latest, highest = state or (None, 0)
            if kind in ("status", "generate", "encrypt"):
                if latest is None:
                    return ErrKeyNotFound.message, state
                return (latest if kind == "encrypt" else latest[0]), state
            if kind == "delete":
                return (ErrKeyNotFound.message, state) if latest is None else (None, (None, highest))
            if kind in ("import", "create") and latest is not None:
                return ErrKeyExists.message, state
            material = command[1] if kind == "import" else None
            return None, ((highest + 1, material), highest + 1)
        if family == "identity":
            if kind == "id_create":
                return None, "" if state is None else state
            if state is None:
                return ErrIdentityNotFound.message, state
            if kind == "id_delete":
                return None, None
            if kind == "assign":
                return None, command[1]
            return state, state
        if kind == "pol_create":
            return None, command[1]
        if state is None:
            return ErrPolicyNotFound.message, state
        if kind == "pol_delete":
            return None, None
        return state, state


@attrs.define
class Findings:
    """Anomalies by class (each a list of one-line-or-so messages), and the undecided objects."""

    anomalies: dict = attrs.Factory(lambda: collections.defaultdict(list))
    undecided: list = attrs.Factory(list)

    def add(self, kind: str, message: str) -> None:
        """Count one anomaly of class C{kind}."""
        self.anomalies[kind].append(message)

    def counts(self) -> dict[str, int]:
        """Anomalies per class."""
        return {kind: len(found) for kind, found in sorted(self.anomalies.items())}

    def total(self, except_classes=()) -> int:
        """Anomalies of every class but C{except_classes}."""
        return sum(len(v) for k, v in self.anomalies.items() if k not in except_classes)


def to_op(record: Record, relaxed=False, rejections=False) -> lin.Op | None:
    """
    The checker's view of a record, or None when it cannot have had an
    effect nor observed one.  C{relaxed} lets a workload read see any
    earlier state; the final reads (client -1), made after the nodes
    agreed, never may.  C{rejections} does the same for writes refused
    with a client error, which changed nothing and so act as reads.
    """
    family = FAMILY.get(record.kind)
    if family is None:
        return None
    command = (record.kind,) if record.arg is None else (record.kind, record.arg)
    if record.outcome == UNKNOWN:
        if record.kind not in WRITES:
            return None
        return lin.Op((family, record.name), command, lin.NOT_OBSERVED, record.invoked, None, record)
    if record.outcome != OK and record.value is None:
        return None
    acts_as_read = record.kind not in WRITES or (rejections and record.outcome != OK)
    stale_allowed = relaxed and acts_as_read and record.client >= 0
    call = 0 if stale_allowed else record.invoked
    return lin.Op((family, record.name), command, record.value, call, record.completed, record)


def describe(op: lin.Op) -> str:
    """One line naming an op of the history and what its client saw."""
    r = op.ref
    answer = "?" if op.ret is None else repr(op.output)
    return f"op {r.op_id} client {r.client} on {r.node}: {r.kind} {r.name} {r.arg or ''} -> {answer}"


def check_history(records: list[Record], findings: Findings, budget: int = lin.DEFAULT_BUDGET) -> None:
    """Linearizability per object; a violation that vanishes when reads may be stale is a stale read."""
    by_object = collections.defaultdict(list)
    for record in records:
        if record.kind in FAMILY:
            by_object[(FAMILY[record.kind], record.name)].append(record)
    model = ObjectModel()
    for key in sorted(by_object):
        group = by_object[key]
        ops = [op for op in map(to_op, group) if op is not None]
        result = lin.check(model, ops, budget, describe)
        if result.unknown:
            findings.undecided.append(f"{key}: undecided within {budget} steps")
        if result.ok or result.unknown:
            continue
        relaxed = [op for op in (to_op(r, relaxed=True) for r in group) if op is not None]
        verdict = lin.check(model, relaxed, budget * 10, describe)
        if not verdict.ok and not verdict.unknown:
            rejections = [op for op in (to_op(r, relaxed=True, rejections=True) for r in group) if op is not None]
            if lin.check(model, rejections, budget * 10, describe).ok:
                findings.add(
                    STALE_REJECTION,
                    f"{key[0]} {key[1]!r}: a write was refused (404/409) on a state "
                    "that missed a write acknowledged before it began: " + result.explanation,
                )
                continue
        if verdict.ok:
            findings.add(
                STALE_READ,
                f"{key[0]} {key[1]!r}: a read missed a write acknowledged before it "
                "began (expected until follower read leases land, issue 8): " + result.explanation,
            )
        elif verdict.unknown:
            findings.add(
                STALE_OR_WORSE,
                f"{key[0]} {key[1]!r}: not linearizable, and whether stale reads "
                "explain it is undecided within the search budget: " + result.explanation,
            )
        else:
            findings.add(NOT_LINEARIZABLE, result.explanation)


def check_listings(records: list[Record], findings: Findings) -> None:
    """A listing shows every key surely created before it began, and nothing never attempted."""
    creates = [r for r in records if r.kind in CREATES]
    deletes = [r for r in records if r.kind == "delete"]
    for listing in records:
        if listing.kind != "list" or listing.outcome != OK:
            continue
        attempted = {r.name for r in creates if r.invoked < listing.completed}
        for name in sorted(listing.value - attempted):
            findings.add(
                PHANTOM, f"op {listing.op_id} on {listing.node} listed key {name!r}, which nobody had tried to create"
            )
        for name in sorted(attempted - listing.value):
            acked = any(r.name == name and r.outcome == OK and r.completed < listing.invoked for r in creates)
            touched = any(r.name == name and r.invoked < listing.completed for r in deletes)
            if acked and not touched:
                findings.add(
                    STALE_READ,
                    f"op {listing.op_id} on {listing.node} did not list key {name!r}, "
                    "created and acknowledged before the listing began (expected until follower "
                    "read leases land, issue 8)",
                )


def check_final(final: list[Record], records: list[Record], findings: Findings) -> None:
    """Every node answers the same final state, and acknowledged imports kept their material."""
    by_node = collections.defaultdict(dict)
    for record in final:
        if record.outcome != OK and record.value is None:
            findings.add(FINAL_READ, f"{record.kind} {record.name} on {record.node}: {record.error}")
            continue
        by_node[record.node][(record.kind, record.name)] = record.value
    views = list(by_node.items())
    for node, view in views[1:]:
        first_node, first = views[0]
        for what in sorted(set(view) | set(first)):
            if view.get(what) != first.get(what):
                findings.add(
                    DISAGREE,
                    f"{what[0]} {what[1]}: {first_node} answers {first.get(what)!r}, {node} answers {view.get(what)!r}",
                )
    for imported in records:
        if imported.kind != "import" or imported.outcome != OK:
            continue
        later = [
            r
            for r in records
            if r.name == imported.name
            and r.kind in ("import", "create", "rotate", "delete")
            and r is not imported
            and (r.completed is None or r.completed > imported.invoked)
        ]
        if later:
            continue
        for node, view in views:
            seen = view.get(("encrypt", imported.name))
            if not (isinstance(seen, tuple) and seen[1] == imported.arg):
                findings.add(
                    LOST_WRITE,
                    f"key {imported.name!r} imported by op {imported.op_id} (acknowledged, "
                    f"nothing later touched it): {node} answers {seen!r}",
                )


def check_answers(records: list[Record], findings: Findings) -> None:
    """No request is ever answered 500: an unknown outcome is a 503 that says so."""
    for record in records:
        if record.status == 500:
            findings.add(
                ANSWERED_500, f"op {record.op_id} {record.kind} {record.name} on {record.node}: 500 {record.error}"
            )


_TRACEBACK = re.compile(r"^(.*)\n\s*Traceback \(most recent call last\):\n((?:[ \t].*\n?)*)", re.MULTILINE)


def check_logs(logs: dict[str, str], findings: Findings) -> None:
    """No node logs a traceback unless the full disk explains it."""
    for node, text in sorted(logs.items()):
        for match in _TRACEBACK.finditer(text):
            block = match.group(0)
            if any(cause in block for cause in NEMESIS_CAUSES):
                continue
            error = [line.strip() for line in match.group(2).splitlines() if line.strip()][-1:]
            findings.add(TRACEBACK, f"{node}: {match.group(1).strip()}: {' '.join(error)}")


def check_run(records, final, logs, unexpected_exits, decrypt_mismatches) -> Findings:
    """Every check of a finished run."""
    findings = Findings()
    check_history(records + final, findings)
    check_listings(records, findings)
    check_final(final, records, findings)
    check_answers(records + final, findings)
    check_logs(logs, findings)
    for line in unexpected_exits:
        findings.add(NODE_EXITED, line)
    for line in decrypt_mismatches:
        findings.add(DECRYPT, line)
    return findings
