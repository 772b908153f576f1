"""
Python's cycle collector, tuned for a node's process.

CPython collects its youngest generation after every 700 new container
objects.  A node keeps each request's objects alive for a whole round trip
to a quorum, so under load most of them outlive two young collections and
are promoted to the oldest generation before they die; the oldest
generation is then collected every second or two, and each of those walks
every tracked object of the process.  On a 3-node cluster under 64 and then
256 writers the leader spent 18% of its time in the collector with the
defaults and under 1% with L{THRESHOLDS}, and wrote 41% more at 256.  (The
keys themselves are no longer among those objects: L{minkms.state.model}
stores key versions as plain bytes, which the collector does not track.)

Nothing is lost by collecting less often: objects without cycles are freed
at once by reference counting whatever the thresholds, and cyclic garbage
waits a little longer.
"""

import gc

THRESHOLDS = (50_000, 20, 10)
"""New objects between young collections, then young collections per middle one, middle ones per full one."""


def tune_collector() -> None:
    """Collect rarely enough that a request's objects die young (L{THRESHOLDS})."""
    gc.set_threshold(*THRESHOLDS)
