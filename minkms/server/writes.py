"""
How a write reaches the log and how its answer comes back.

On the leader a client's write is checked and prepared against the
leader's state (once it has applied every write a client may have seen
acknowledged: a lagging state could answer a wrong 404 or 409; entries
still on their way need no wait, as applying a write checks it again),
proposed through the driver and answered once applied.  A follower
forwards the write, as the client sent it, to the leader over the peer
channel and answers once the entry the leader placed is applied here.
Every 503 says whether the write may have been applied.
"""

import time

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from minkms.errors import KMSError, internal, unavailable
from minkms.kms import dispatch
from minkms.raft.errors import NotLeader, RaftError
from minkms.raft.ready import LEADER
from minkms.server import peer

log = Logger()

WRITE_TIMEOUT = 15.0
"""Seconds a client write may wait for commit before an ambiguous 503."""
CONNECT_TIMEOUT = 2.0
"""Seconds a follower waits for its link to the leader before giving up (nothing sent)."""
MAX_WRITES_IN_FLIGHT = 512
"""
Entries the leader holds proposed but not yet applied before it answers new
writes 503 C{busy} at once (nothing applied), so that latency stays bounded
instead of growing with the queue (docs/operations.md).
"""


class WritePath:
    """The write side of one L{minkms.server.node.Node}."""

    def __init__(self, node) -> None:
        self._node = node

    def submit(self, ctx, command, request):
        """A client's write; fires with the apply result on this node."""
        node = self._node
        return self._replicate(
            lambda: dispatch.prepare_write(node.state, ctx, command, request).encode(),
            code=command.code,
            enclave=ctx.enclave,
            caller=ctx.caller,
            request=request.SerializeToString(),
        )

    def propose(self, data: bytes):
        """Replicate a prepared command; fire with its apply result on this node."""
        return self._replicate(lambda: data, code=peer.PREPARED, enclave="", caller="", request=data)

    def submit_forwarded(self, code: int, enclave: str, caller: str, request: bytes):
        """
        A write forwarded by a follower (L{peer.Forward}): prepare it here,
        unless the follower did (L{peer.PREPARED}), and propose it; fire with
        where the entry went (index, term).
        """
        from minkms.wire.commands import BY_CODE

        if code == peer.PREPARED:
            return self._when_caught_up(lambda: self.propose_here(lambda: request))
        node = self._node
        command = BY_CODE[code]
        ctx = dispatch.CallContext(
            caller=caller, enclave=enclave, sysadmin=node.settings.sysadmin, now_ns=time.time_ns()
        )
        message = command.request.FromString(request)
        return self._when_caught_up(
            lambda: self.propose_here(lambda: dispatch.prepare_write(node.state, ctx, command, message).encode())
        )

    def _replicate(self, prepare, **forward):
        """
        On the leader, propose C{prepare()} and wait for its apply; on a
        follower, send the leader L{peer.Forward}C{(**forward)} and wait for
        the entry it placed to be applied here.
        """
        node = self._node
        try:
            node.check_usable()
            if node.core.role == LEADER:
                return self._when_caught_up(lambda: self.wait_applied(*self.propose_here(prepare)))
        except KMSError as e:
            return defer.fail(e)
        return defer.ensureDeferred(self._via_leader(**forward))

    def _when_caught_up(self, then):
        """
        Run C{then()} once this leader has applied every write a client may
        have seen acknowledged (L{minkms.raft.core.RaftCore.seen_index}):
        a new leader applies its predecessor's entries only after the lease
        wait, and a write checked before that could be refused wrongly.
        """
        node = self._node
        seen = node.core.seen_index()
        if node.driver.applied >= seen:
            return defer.maybeDeferred(then)
        d = node.driver.reads.wait_index(seen)
        d.addTimeout(WRITE_TIMEOUT, node.reactor)
        d.addCallback(lambda _: then())
        d.addErrback(_not_caught_up)
        return d

    def propose_here(self, prepare) -> tuple[int, int]:
        """Propose C{prepare()} on this leader; say where the entry went (index, term)."""
        node = self._node
        node.check_usable()
        if node.driver.stopped:
            raise unavailable("node is shutting down; the write was not applied")
        if node.core.role != LEADER:
            raise unavailable("not the leader any more; the write was not applied: try again")
        if node.core.log.last_index() - node.driver.applied >= MAX_WRITES_IN_FLIGHT:
            raise unavailable(
                f"busy: {MAX_WRITES_IN_FLIGHT} writes are waiting for a quorum; the write was not applied: try again"
            )
        data = prepare()
        try:
            return node.driver.propose(data)
        except NotLeader:
            raise unavailable("no leader: the cluster has no quorum right now; the write was not applied") from None
        except RaftError as e:
            raise unavailable(f"write not accepted: {e}; it was not applied") from None

    async def _via_leader(self, **forward):
        placed = await self.call_leader(peer.Forward, WRITE_TIMEOUT, **forward)
        return await self.wait_applied(placed["index"], placed["term"])

    def _leader_link(self):
        """The link to the leader, or a 503 saying why there is none (nothing was sent)."""
        node = self._node
        leader = node.core.leader
        if leader < 0:
            seconds = node.leader_contact_age()
            if seconds is not None:
                raise unavailable(
                    f"cannot reach the leader: this node last heard from one {seconds:.1f}s ago "
                    "and cannot reach it now; the write was not applied"
                )
            raise unavailable("no leader: the cluster has no quorum right now; the write was not applied")
        link = node.peer_links().get(leader)
        if link is None:
            raise unavailable(f"cannot reach the leader (node {leader}); the write was not applied")
        return leader, link

    async def call_leader(self, command, timeout: float, **arguments):
        """
        Call a peer command on the leader; its KMSError comes back as one.
        A leader that cannot be reached (L{peer.PEER_FAILURES}) is a 503
        that says whether the request left this node (then its outcome is
        unknown).  Anything else is a bug: logged with its traceback and
        answered 500.
        """
        leader, link = self._leader_link()
        try:
            protocol = await link.when_connected(min(timeout, CONNECT_TIMEOUT), self._node.reactor)
        except peer.PEER_FAILURES:
            raise unavailable(
                f"cannot reach the leader (node {leader} at {link.address}); the write was not applied"
            ) from None
        except Exception:
            raise _bug("connecting to the leader") from None
        try:
            return await protocol.callRemote(command, **arguments).addTimeout(timeout, self._node.reactor)
        except KMSError:
            raise
        except peer.PEER_FAILURES as e:
            raise unavailable(
                f"lost the leader (node {leader}) after sending it the write "
                f"({e.__class__.__name__}): it may or may not have been applied"
            ) from None
        except Exception:
            raise _bug(f"calling {command.__name__} on the leader") from None

    async def propose_membership(self, change) -> None:
        """
        Propose a single-server membership change here (the leader) and
        wait until it is committed and applied.
        """
        core = self._node.core
        try:
            index = core.propose_config(change)
        except NotLeader:
            raise unavailable("leadership changed; try again") from None
        except RaftError as e:
            raise KMSError(409, f"membership change refused: {e}") from None
        d = self.wait_applied(index, core.term)
        self._node.driver.kick()
        await d

    def wait_applied(self, index: int, term: int):
        """The apply result of the entry at (C{index}, C{term}) here, within L{WRITE_TIMEOUT}."""
        d = self._node.driver.wait_applied(index, term)
        d.addTimeout(WRITE_TIMEOUT, self._node.reactor, onTimeoutCancel=timed_out)
        return d


def _bug(doing: str) -> KMSError:
    """
    Log the exception being handled, a programming error met while
    C{doing}, with its traceback; return the 500 to answer.
    """
    log.failure("{doing} failed", doing=doing)
    return internal("internal server error")


def timed_out(result, timeout):
    """C{addTimeout}'s replacement result for a write that waited too long."""
    return Failure(
        unavailable(f"write timed out after {timeout:g}s waiting for a quorum; it may or may not have been applied")
    )


def _not_caught_up(failure):
    """A leader that could not apply what was committed in time: the write was not proposed."""
    if failure.check(defer.TimeoutError, defer.CancelledError):
        raise unavailable("the leader is still applying committed entries; the write was not applied")
    return failure
