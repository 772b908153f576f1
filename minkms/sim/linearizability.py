"""
Linearizability of client histories, checked from the clients' view only.

The checker replays nothing from the cluster: given each operation's
invocation and return time and what the client observed, it searches for a
sequential order that respects real time and that a model of the service
accepts (Wing & Gong's search with Lowe's memoization of the set of
operations already placed plus the model state reached).  The history is
split by key and each key checked alone (P-compositionality), which keeps
the search small.  An operation whose outcome the client never learned
(it failed ambiguously, timed out, or its node crashed) has no return: it
may take effect at any time after its invocation, or never, as in etcd's
C{NonDeterministicModel}.  The search is bounded by a step budget and says
L{UNKNOWN} rather than run on.

A model is C{init() -> state} and C{step(state, op) -> (ok, new state)},
with hashable states; C{step} must accept any outcome for an op whose
C{output} is L{NOT_OBSERVED}.  Two models follow: the register store's and
the KMS workload's (L{minkms.sim.kmsmodel} semantics, one key at a time).
"""

import hashlib
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol

import attrs

from minkms.errors import (
    ErrEnclaveExists,
    ErrEnclaveNotFound,
    ErrKeyExists,
    ErrKeyNotFound,
)
from minkms.sim.history import OK, PENDING, READ, UNANSWERED, UNKNOWN as UNKNOWN_OUTCOME, WRITE, History, Operation
from minkms.sim.kmsmodel import DEFAULT_KEY_TYPE, describe_error, describe_key
from minkms.state import changes

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not linearizable"
UNKNOWN = "unknown"

DEFAULT_BUDGET = 100_000
"""Search steps allowed per key before giving up with L{UNKNOWN}."""


class _Marker:
    """A named sentinel, distinct from every value a client could observe."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NOT_OBSERVED = _Marker("NOT_OBSERVED")
"""The output of an op whose client was not told (or not told everything)."""

EVERY_KEY = _Marker("EVERY_KEY")
"""
The key of an op that acts on every key (creating the KMS enclave): it
joins every key's sub-history and each places it on its own.  That never
reports a false violation, but can miss keys disagreeing about when it
happened.
"""


@attrs.frozen(eq=False)
class Op:
    """
    One client operation as the checker sees it.

    @ivar ret: the return time, or None if the outcome is unknown: then the
        op may take effect at any time after C{call}, or never.
    @ivar ref: what explanations name it by (the history's operation).
    """

    key: object
    input: object
    output: object
    call: int
    ret: int | None
    ref: object = None


class Model(Protocol):
    """A sequential specification of one key's worth of a service."""

    def init(self) -> Hashable:
        """The state before any operation."""

    def step(self, state: Hashable, op: Op) -> tuple[bool, Hashable]:
        """Whether C{op} can take effect in C{state} with its output, and the state after."""


@attrs.frozen
class Result:
    """
    The verdict on a history.

    @ivar key: the key whose sub-history was not linearizable (or undecided).
    @ivar explanation: why, for a failure message.
    @ivar steps: search steps spent, over all keys.
    """

    verdict: str
    key: object = None
    explanation: str = ""
    steps: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict == LINEARIZABLE

    @property
    def unknown(self) -> bool:
        return self.verdict == UNKNOWN


def check(
    model: Model,
    ops: Iterable[Op],
    budget: int = DEFAULT_BUDGET,
    describe: Callable[[Op], str] = repr,
) -> Result:
    """
    Check every key's sub-history; the first failing key decides, else
    any undecided key makes the verdict L{UNKNOWN}.
    """
    shared, by_key = [], {}
    for op in ops:
        if op.key is EVERY_KEY:
            shared.append(op)
        else:
            by_key.setdefault(op.key, []).append(op)
    if not by_key and shared:
        by_key[EVERY_KEY] = []
    steps, undecided = 0, None
    for key in sorted(by_key, key=str):
        sub = sorted(shared + by_key[key], key=lambda op: op.call)
        verdict, spent, why = _search(model, sub, budget, describe)
        steps += spent
        if verdict == NOT_LINEARIZABLE:
            return Result(verdict, key, f"key {key!r}: {why}", steps)
        if verdict == UNKNOWN and undecided is None:
            undecided = key
    if undecided is not None:
        return Result(UNKNOWN, undecided, f"key {undecided!r}: undecided within {budget} steps", steps)
    return Result(LINEARIZABLE, steps=steps)


def _search(model: Model, ops: list[Op], budget: int, describe: Callable[[Op], str]) -> tuple[str, int, str]:
    """
    Wing & Gong's search over a doubly linked list of call and return
    events: take the first call that the model accepts and whose (placed
    set, state) pair is new, lift it out and start over; on reaching a
    return whose op is still unplaced, undo the last placement.  The
    history is linearizable once every op with a return is placed.
    """
    events = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, 2 * i + 1))
        if op.ret is not None:
            events.append((op.ret, 1, 2 * i + 2))
    events.sort()
    size = 2 * len(ops) + 2
    nxt, prv = [-1] * size, [-1] * size
    last = 0
    for _, _, node in events:
        nxt[last], prv[node] = node, last
        last = node

    def lift(node: int) -> None:
        before, after = prv[node], nxt[node]
        nxt[before] = after
        if after != -1:
            prv[after] = before

    def unlift(node: int) -> None:
        before, after = prv[node], nxt[node]
        nxt[before] = node
        if after != -1:
            prv[after] = node

    left = sum(1 for op in ops if op.ret is not None)
    state = model.init()
    placed = 0
    stack: list[tuple[int, Hashable]] = []
    seen: set[tuple[int, Hashable]] = set()
    deepest: tuple[list[int], Hashable, int] | None = None
    steps = 0
    node = nxt[0]
    while left:
        steps += 1
        if steps > budget:
            return UNKNOWN, steps, ""
        if node == -1:
            raise AssertionError("an unplaced op's return should lie ahead")
        if node % 2 == 0:
            if deepest is None or len(stack) > len(deepest[0]):
                deepest = ([i for i, _ in stack], state, (node - 2) // 2)
            if not stack:
                return NOT_LINEARIZABLE, steps, _explain(ops, deepest, describe)
            i, state = stack.pop()
            placed ^= 1 << i
            if ops[i].ret is not None:
                left += 1
                unlift(2 * i + 2)
            unlift(2 * i + 1)
            node = nxt[2 * i + 1]
            continue
        i = (node - 1) // 2
        accepted, after = model.step(state, ops[i])
        if accepted:
            memo = (placed | 1 << i, after)
            if memo not in seen:
                seen.add(memo)
                stack.append((i, state))
                state, placed = after, memo[0]
                lift(node)
                if ops[i].ret is not None:
                    left -= 1
                    lift(2 * i + 2)
                node = nxt[0]
                continue
        node = nxt[node]
    return LINEARIZABLE, steps, ""


def _explain(ops: list[Op], deepest: tuple[list[int], Hashable, int], describe: Callable[[Op], str]) -> str:
    """
    The longest order found that respects real time and the model, and the
    op that no continuation of it could place before that op returned.
    """
    order, state, stuck = deepest
    blocked = ops[stuck]
    placed = set(order)
    rivals = [op for j, op in enumerate(ops) if j not in placed and j != stuck and op.call <= blocked.ret]
    shown = order[-6:]
    lines = [
        f"no order of its operations is consistent: {describe(blocked)} cannot be placed",
        f"  longest consistent order places {len(order)} of {len(ops)} operations"
        + (", ending with:" if shown else ""),
    ]
    lines += [f"    {describe(ops[j])}" for j in shown]
    lines.append(f"  leaving state {state!r}")
    if rivals:
        lines.append("  nor can any of these, invoked by then, come next and help:")
        lines += [f"    {describe(op)}" for op in rivals[:6]]
    return "\n".join(lines)


# -- models of the simulator's state machines -------------------------------


class RegisterModel:
    """
    One register of the register store: a write sets the value (and is
    answered True), a read returns it (None before any write).
    """

    def init(self) -> str | None:
        return None

    def step(self, state: str | None, op: Op) -> tuple[bool, str | None]:
        kind, value = op.input
        if kind == WRITE:
            return op.output is NOT_OBSERVED or op.output is True, value
        return op.output == state, state


class KeyModel:
    """
    One KMS key name plus whether the enclave exists, as
    L{minkms.sim.kmsmodel.KeyRingModel} defines them: the state is
    C{(enclave exists, live versions as (type, read result), highest
    version ever)}; writes answer None or the client's error, reads the
    KEY:STATUS result.
    """

    def init(self) -> tuple:
        return (False, (), 0)

    def step(self, state: tuple, op: Op) -> tuple[bool, tuple]:
        answer, after = self._apply(state, op.input)
        return op.output is NOT_OBSERVED or op.output == answer, after

    @staticmethod
    def _apply(state: tuple, command: tuple) -> tuple[object, tuple]:
        enclave, versions, highest = state
        kind = command[0]
        if kind == READ:
            if not enclave:
                return describe_error(ErrEnclaveNotFound), state
            if not versions:
                return describe_error(ErrKeyNotFound), state
            return versions[-1][1], state
        if kind == "enclave":
            return (ErrEnclaveExists, state) if enclave else (None, (True, versions, highest))
        if not enclave:
            return ErrEnclaveNotFound, state
        if kind == "create":
            _, add_version, key_type, material = command
            if versions and not add_version:
                return ErrKeyExists, state
            key_type = key_type or (versions[-1][0] if versions else DEFAULT_KEY_TYPE)
            highest += 1
            latest = (key_type, describe_key(highest, key_type, material))
            return None, (enclave, versions + (latest,), highest)
        if not versions:
            return ErrKeyNotFound, state
        _, all_versions = command
        return None, (enclave, () if all_versions else versions[:-1], highest)


# -- client histories of simulated runs --------------------------------------


def _outcome(op: Operation) -> tuple[bool, int | None] | None:
    """Whether C{op} belongs in the check, and its return (None: unknown)."""
    if op.status == OK:
        if op.unleased:
            return None
        return True, op.completed
    if op.kind == WRITE and op.status in (UNKNOWN_OUTCOME, PENDING):
        return True, None
    return None


def register_ops(history: History) -> list[Op]:
    """
    The register store's history: acknowledged writes and reads, plus
    writes of unknown outcome whose value some read returned (one nobody
    read may as well not have happened, since values are unique).
    """
    seen = {op.value for op in history.operations if op.kind == READ and op.status == OK}
    result = []
    for op in history.operations:
        outcome = _outcome(op)
        if outcome is None:
            continue
        ret = outcome[1]
        if op.kind == READ:
            result.append(Op(op.key, (READ, None), op.value, op.invoked, ret, op))
        elif ret is not None or op.value in seen:
            output = NOT_OBSERVED if op.answer is UNANSWERED or ret is None else op.answer
            result.append(Op(op.key, (WRITE, op.value), output, op.invoked, ret, op))
    return result


def kms_ops(history: History) -> list[Op]:
    """
    The KMS workload's history: commands decoded from what was proposed
    (an enclave creation belongs to every key), reads as KEY:STATUS
    results.  A write never proposed cannot have taken effect.
    """
    result = []
    for op in history.operations:
        outcome = _outcome(op)
        if outcome is None:
            continue
        ret = outcome[1]
        if op.kind == READ:
            result.append(Op(op.key, (READ,), op.value, op.invoked, ret, op))
            continue
        if op.data is None:
            if ret is None:
                continue
            raise AssertionError(f"write {op.op_id} was acknowledged but never proposed")
        command = changes.decode(op.data)
        if isinstance(command, changes.CreateEnclave):
            key, parsed = EVERY_KEY, ("enclave",)
        elif isinstance(command, changes.CreateKey):
            key = command.name
            parsed = ("create", command.add_version, command.key_type, command.material)
        elif isinstance(command, changes.DeleteKey):
            key, parsed = command.name, ("delete", command.all_versions)
        else:
            raise AssertionError(f"the model does not know {type(command).__name__}")
        output = NOT_OBSERVED if op.answer is UNANSWERED or ret is None else op.answer
        result.append(Op(key, parsed, output, op.invoked, ret, op))
    return result


MODELS: dict[str, tuple[Callable[[], Model], Callable[[History], list[Op]]]] = {
    "register": (RegisterModel, register_ops),
    "kms": (KeyModel, kms_ops),
}
"""Machine name -> (its model, how to read its history)."""


def describe_operation(op: Op) -> str:
    """One line naming a history operation and what its client saw."""
    source = op.ref
    if not isinstance(source, Operation):
        return f"{op.input!r} -> {op.output!r} [{op.call}, {op.ret}]"
    ret = "?" if op.ret is None else op.ret
    if source.kind == READ:
        what = f"read {source.key!r} -> {source.value!r}"
    else:
        shown = op.input
        if shown[0] == "create":
            shown = (*shown[:3], hashlib.sha256(shown[3]).hexdigest()[:16])
        outcome = "outcome unknown" if op.ret is None else f"answered {op.output!r}"
        what = f"write {source.key!r} {shown!r}, {outcome}"
    return f"op {source.op_id} (client {source.client}, node {source.node}): {what}, [{op.call}, {ret}] ms"


def check_history(history: History, machine: str, budget: int = DEFAULT_BUDGET) -> Result:
    """Check a simulated run's client history against the model of C{machine}."""
    model, read_ops = MODELS[machine]
    return check(model(), read_ops(history), budget, describe_operation)
