"""Protobuf messages, command frames and error bodies of the MinIO KMS wire protocol."""
