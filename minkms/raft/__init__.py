"""
A pure Raft consensus core: no Twisted, no clock, no sockets, no I/O.

  - L{minkms.raft.core}: L{RaftCore}, its options and the driver contract.
  - L{minkms.raft.ready}: what the core hands out (Ready, Status).
  - L{minkms.raft.messages} and L{minkms.raft.codec}: peer messages and bytes.
  - L{minkms.raft.config}: cluster membership and single-server changes.
  - L{minkms.raft.log}, L{minkms.raft.progress}, L{minkms.raft.quorum},
    L{minkms.raft.readindex}: the core's parts.
  - L{minkms.raft.types}: values shared with storage (Entry, HardState, ...).
  - L{minkms.raft.errors}: why a request was refused.
"""
