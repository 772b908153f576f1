"""The C{twistd minkms} plugin: a MinIO KMS compatible key management node."""

from twisted.application.service import ServiceMaker

minkms = ServiceMaker(
    "minkms",
    "minkms.server.service",
    "A clustered, MinIO KMS compatible Key Management Service node.",
    "minkms",
)
