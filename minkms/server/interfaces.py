"""
The interface between the HTTP API and the node that owns the replicated
state: exactly what the API's resources (L{minkms.server.api},
L{minkms.server.dbresource}) use of a node, so that either side can be
tested with a fake of the other.  L{minkms.server.node.Node} provides it
(checked by C{verifyObject} in the tests).
"""

from zope.interface import Attribute, Interface


class INode(Interface):
    """
    A cluster member as the API sees it: local reads, replicated writes.
    """

    host = Attribute("This node's advertised C{host:port} (the C{--host} value).")
    state = Attribute(
        "The local, applied L{minkms.state.machine.StateMachine}. Reads are served from it (DESIGN decision 6)."
    )
    hsm = Attribute("The HSM that seals backups (L{minkms.hsm.SoftHSM}).")
    cluster_id = Attribute("The ID of the cluster this node belongs to.")

    def dump_state():
        """
        The snapshot bytes of C{state} as it is at the call, for a backup.

        @return: a Deferred firing with them, serialized in slices so that
            a large state does not hold up the node's other work.
        """

    def submit_write(ctx, command, request):
        """
        Check, prepare and replicate a client's write command (on the
        leader), as L{propose} does for a prepared one.

        @param ctx: the L{minkms.kms.CallContext} of the request.
        @param command: its row of L{minkms.wire.commands}.
        @return: a Deferred firing with the apply result on this node.
        """

    def propose(data):
        """
        Replicate an encoded state change (L{minkms.state.changes}).

        @return: a Deferred firing with the apply result once the change is
            committed on a quorum (fsynced) and applied on this node, or
            failing with a L{minkms.errors.KMSError} (e.g. 503 no leader).
        """

    def ready(write):
        """Whether this node can serve reads (or, with C{write}, writes)."""

    def read_barrier():
        """
        None if a read may be answered from C{state} now; else a Deferred
        firing once it may (every acknowledged write applied here), or
        failing with a 503 L{minkms.errors.KMSError}.
        """

    def fresh_now():
        """Whether a read could be answered from C{state} now (no wait)."""

    def read_mode():
        """How reads are served now: C{lease}, C{read-index}, C{without-leader}, C{refused}."""

    def cluster_command(command, request):
        """
        Run a cluster row of the command table (membership, HSMs, status):
        the responder L{minkms.server.membership.node_commands} holds for it.

        @return: a Deferred firing with its answer (None for a write), or
            failing with a KMSError.
        """
