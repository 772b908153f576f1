"""
What each command of C{/v1/kms} means, between the command table
(L{minkms.wire.commands}) and the state machine (L{minkms.state}): pure,
no Twisted, no I/O.

  - L{dispatch}: who is calling (L{CallContext}), the scope checks every
    command passes, and the one entry point per kind of command:
    L{execute_read} and L{prepare_write};
  - L{answers}: the read responders, one per read row of the table;
  - L{proposals}: the write responders, turning a request into the state
    change (L{minkms.state.changes}) the server proposes.
"""

from minkms.kms.dispatch import CallContext, execute_read, prepare_write, result_error

__all__ = ["CallContext", "execute_read", "prepare_write", "result_error"]
