"""minkms: a clustered, MinIO KMS compatible Key Management Service on Twisted."""
