"""The audit trail's record format and chain verification (no I/O, no Twisted)."""
