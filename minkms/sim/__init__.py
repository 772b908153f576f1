"""A deterministic, seeded simulator of whole clusters (core + state machine + fake network/disk/clock)."""
