"""
Version strings reported by C{/version}, the banner and C{minkms --version}.

MinIO KMS reports its version as a release timestamp (C{YYYY-MM-DDThh-mm-ssZ});
clients and operators compare these, so we follow the same form.
"""

PACKAGE_VERSION = "0.1.0"
VERSION = "2026-11-27T00-00-00Z"
COMMIT = "0000000000000000000000000000000000000000"
API_VERSION = "v1"
