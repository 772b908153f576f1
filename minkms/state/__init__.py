"""
The replicated KMS state: a pure state machine of enclaves, keys, identities
and policies.

  - L{model}: the data; L{snapshot}: its canonical bytes;
  - L{changes}: the state changes (write commands) and their log encoding;
  - L{apply} and L{machine}: how writes change the state, deterministically;
  - L{reads}: the read commands; L{authz} and L{policy}: who may do what;
  - L{arguments}: apply-time argument rules.

Nothing here imports Twisted or the wire package, or does I/O.
"""
