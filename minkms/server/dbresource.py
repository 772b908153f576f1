"""
C{GET /v1/db} and C{PUT /v1/db}: C{minkms backup} and C{minkms restore}.

A backup is a sealed snapshot of the KMS state (enclaves, keys, identities,
policies), not of the membership; only a holder of the same HSM key can
open it.  A restore replaces the state through the log, so every member
applies it.  Both are SysAdmin only.
"""

import time

from minkms.errors import KMSError, bad_request
from minkms.server.api import APIResource, require_sysadmin
from minkms.server.http import MAX_DB_BODY, MAX_OTHER_BODY, caller_identity, send_error
from minkms.server.replies import finish_later, raise_apply_error
from minkms.state.changes import RestoreState
from minkms.storage.backup import open_backup, seal_backup
from minkms.storage.errors import BackupError


class DBResource(APIResource):
    """The sealed-snapshot endpoint of one node."""

    isLeaf = True
    exact = True

    def __init__(self, node, sysadmin: str) -> None:
        super().__init__()
        self._node = node
        self._sysadmin = sysadmin

    def body_limit(self, method: bytes, rest: list[bytes], caller: str) -> int:
        """
        Only the SysAdmin may send a backup (403 to anyone else before a
        byte of it is read); L{MAX_DB_BODY} is the most it may be.
        """
        if method != b"PUT":
            return MAX_OTHER_BODY
        require_sysadmin(caller, self._sysadmin)
        return MAX_DB_BODY

    def _authorize(self, request) -> str:
        return require_sysadmin(caller_identity(request), self._sysadmin)

    def render_GET(self, request):
        try:
            self._authorize(request)
        except KMSError as e:
            return send_error(request, e)
        node = self._node
        d = node.dump_state()
        d.addCallback(lambda state: seal_backup(node.hsm, node.cluster_id, state))
        return finish_later(request, d)

    def render_PUT(self, request):
        try:
            caller = self._authorize(request)
            try:
                state = open_backup(self._node.hsm, request.content.read())
            except BackupError as e:
                raise bad_request(f"invalid backup: {e}") from None
            except KMSError:
                raise bad_request("invalid backup: it was not made with this cluster's HSM key") from None
        except KMSError as e:
            return send_error(request, e)
        command = RestoreState(caller=caller, sysadmin=True, time=time.time_ns(), state=state)
        d = self._node.propose(command.encode())
        d.addCallback(raise_apply_error)
        d.addCallback(lambda _: b"")
        return finish_later(request, d)
