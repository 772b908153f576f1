"""
The small interfaces between the HTTP API and the node that owns the
replicated state, so that each side can be tested with a fake of the other.
"""

from zope.interface import Attribute, Interface


class INode(Interface):
    """
    A cluster member as the API sees it: local reads, replicated writes.
    """

    state = Attribute(
        "The local, applied L{minkms.state} machine. Reads are served from it "
        "(DESIGN decision 6)."
    )
    host = Attribute("This node's advertised C{host:port} (the C{--host} value).")

    def submit_write(ctx, command, request):
        """
        Check, prepare and replicate a client's write command (on the
        leader), as L{propose} does for a prepared one.
        """

    def propose(data):
        """
        Replicate an encoded state-machine command.

        @return: a Deferred firing with the apply result once the command is
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

    def cluster_status():
        """A Deferred firing with a C{ClusterStatusResponse} for the cluster."""

    def cluster_command(command, request):
        """
        Run a cluster-membership command (add/remove/edit node, HSMs).

        @return: a Deferred firing when done, or failing with a KMSError.
        """

    def backup():
        """A Deferred firing with a sealed snapshot of the state (C{/v1/db})."""

    def restore(blob):
        """Replace the state by a sealed snapshot made by L{backup}."""
