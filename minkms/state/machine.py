"""
The replicated state machine: applies committed commands, in log order, on
every node alike.

Applying is a pure function of the state and the command (DESIGN decision
7): no clock, no randomness, no configuration.  A command that fails —
undecodable bytes, a lost permission, a key created concurrently — returns
its L{KMSError} as the result and leaves the state unchanged; apply never
raises, because a raising apply would stop replication on every node.
"""

import hashlib
from collections.abc import Iterator

from minkms.errors import KMSError, bad_request, internal
from minkms.state import snapshot
from minkms.state.apply import plan
from minkms.state.changes import Command, CommandError, CreateKey, DeleteKey, ImportKey, decode
from minkms.state.model import State, detached_copy

KEY_COMMANDS = (CreateKey, ImportKey, DeleteKey)
"""Commands that change key rings only: who may do what stays as it was."""


def _as_command(command: Command | bytes) -> Command:
    if isinstance(command, Command):
        return command
    if isinstance(command, (bytes, bytearray, memoryview)):
        try:
            return decode(bytes(command))
        except CommandError as e:
            raise bad_request(f"invalid state command: {e}") from None
    raise internal(f"invalid state command of type {type(command).__name__}")


def check(state: State, command: Command | bytes) -> KMSError | None:
    """
    The error applying C{command} to C{state} would give now, without
    changing it: the proposer's dry run.
    """
    try:
        plan(state, _as_command(command))
    except KMSError as e:
        return e
    except Exception as e:
        return internal(f"state command failed: {e!r}")
    return None


class StateMachine:
    """
    The KMS state and the one way to change it.

    @ivar state: the current L{State}; read it, never mutate it directly.
    """

    def __init__(self, state: State | None = None) -> None:
        self.state = state if state is not None else State()

    def apply(self, command: Command | bytes) -> KMSError | None:
        """
        Apply one committed command (a L{Command} or its encoded bytes).

        @return: C{None} on success, else the L{KMSError} for the client.
        """
        try:
            command = _as_command(command)
            commit = plan(self.state, command)
        except KMSError as e:
            return e
        except Exception as e:
            return internal(f"state command failed: {e!r}")
        try:
            commit()
        except Exception as e:
            # Commit functions only assign into dicts; should one fail, every
            # node fails identically, so replicas still agree.
            return internal(f"state command failed while applying: {e!r}")
        finally:
            if not isinstance(command, KEY_COMMANDS):
                self.state.subjects.clear()
        return None

    def check(self, command: Command | bytes) -> KMSError | None:
        """The error L{apply} would return now, without applying."""
        return check(self.state, command)

    def snapshot(self) -> bytes:
        """The canonical bytes of the state (equal states, equal bytes)."""
        return snapshot.dump(self.state)

    def snapshot_pieces(self) -> Iterator[bytes]:
        """L{snapshot} in pieces of a few keys each (L{snapshot.dump_pieces})."""
        return snapshot.dump_pieces(self.state)

    def frozen(self) -> "StateMachine":
        """A machine over a copy of the state as it is now, whose L{snapshot} may be taken later, piece by piece."""
        return StateMachine(detached_copy(self.state))

    def restore(self, data: bytes) -> None:
        """
        Replace the state with a snapshot's.

        @raise SnapshotError: when C{data} is not a snapshot; the state is
            then unchanged.
        """
        self.state = snapshot.load(data)

    def digest(self) -> str:
        """SHA-256 (hex) of L{snapshot}, for comparing replicas."""
        return hashlib.sha256(self.snapshot()).hexdigest()


def result_error(result: object) -> KMSError | None:
    """The error in an L{StateMachine.apply} result, if it is one."""
    return result if isinstance(result, KMSError) else None
