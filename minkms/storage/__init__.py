"""Sealed on-disk storage: record encoding (pure) and the volume file (Deferred writes)."""
