"""The replicated KMS state: a pure state machine of enclaves, keys, identities and policies."""
