"""A pure Raft consensus core: no Twisted, no clock, no sockets."""
