"""
The one Raft driver (DESIGN decision 5): the Ready loop that persists,
sends, applies and answers, over injected ports.  The Twisted node and the
simulator both run it, so the simulator's seeds prove what production
runs.

It uses Deferreds but never a reactor: time comes from an injected clock
and timeouts are the caller's (the node's reactor, the simulator's
scheduler).
"""

from minkms.driver.loop import RaftDriver
from minkms.driver.reads import REFUSE, SERVE

__all__ = ["RaftDriver", "REFUSE", "SERVE"]
