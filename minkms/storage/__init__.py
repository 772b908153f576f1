"""
Sealed on-disk storage: C{VOLUME/kms.db} (DESIGN decisions 3 and 4).

  - L{minkms.storage.records}: the record kinds and their plaintext (pure).
  - L{minkms.storage.layout}: header and frame bytes, sealing under the REK
    with the record's position as associated data (pure).
  - L{minkms.storage.recovery}: which bad bytes are a torn tail (pure).
  - L{minkms.storage.replay}: records to durable Raft state (pure).
  - L{minkms.storage.backup}: the sealed backup file (pure).
  - L{minkms.storage.files}, L{minkms.storage.faults}: blocking file
    operations, real and breakable.
  - L{minkms.storage.window}: the file read in bounded chunks, for recovery.
  - L{minkms.storage.startup}: lock, create or recover a volume (blocking).
  - L{minkms.storage.volume}: the open volume with Deferred writes, group
    commit and compaction (the only module here that uses Twisted).
"""
