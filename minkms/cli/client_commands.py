"""The client commands of the C{minkms} CLI (filled in with the KMS API)."""

COMMANDS: dict = {}
