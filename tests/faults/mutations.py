"""
Deliberately broken builds of the server, applied by monkeypatching in the
launched process (L{tests.faults.launch}): the fault suite must catch each.
"""

import time

from twisted.internet import defer

MUTANT_DISK_DELAY = 1.0
"""Seconds the ack-before-fsync mutant's disk takes per write, so that
what it acknowledged early is often not on disk when a node is killed."""


def ack_before_fsync() -> None:
    """The volume's append Deferred fires before the records are written and fsynced."""
    from minkms.storage import volume

    append = volume.Volume.append
    write_batch = volume.Volume._write_batch

    def early_append(self, records, sync=True):
        append(self, records, sync).addErrback(lambda failure: None)
        return defer.succeed(None)

    def slow_write_batch(self, records, start, sync=True):
        time.sleep(MUTANT_DISK_DELAY)
        return write_batch(self, records, start, sync)

    volume.Volume.append = early_append
    volume.Volume._write_batch = slow_write_batch


def timeout_answers_500() -> None:
    """
    A write timeout errbacks the Deferred that C{addTimeout} already
    failed (issue 10, item 1): the client gets a 500 instead of the 503
    that says the write may or may not have been applied.
    """
    from minkms.errors import unavailable
    from minkms.server import writes

    def timed_out(d, timeout):
        d.errback(unavailable("write timed out waiting for a quorum; it may or may not have been applied"))

    writes.timed_out = timed_out


def serves_after_lease() -> None:
    """A follower keeps answering reads from its own state after its read lease lapsed."""
    from minkms.raft import lease

    def read_index(self, now):
        return self.index if self.expiry > lease.NEVER else None

    lease.FollowerLease.read_index = read_index


MUTANTS = {
    "ack_before_fsync": ack_before_fsync,
    "timeout_500": timeout_answers_500,
    "serves_after_lease": serves_after_lease,
}
