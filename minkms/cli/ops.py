"""
Day-two commands: C{logs} (follow a node's log or audit trail), C{audit
verify}, C{profile} and C{env}.
"""

import datetime
import json
import os
import re
import sys
import time

from twisted.internet import task

from minkms.apikey import APIKey, APIKeyError
from minkms.audit import chain
from minkms.cli import session
from minkms.cli.output import ArgumentParser, CLIError
from minkms.client import DEFAULT_SERVER
from minkms.hsm import HSMKeyError, SoftHSM
from minkms.wire import kms_pb2 as pb
from minkms.wire.logrec import decode_log_records

LEVELS = {"debug": -4, "info": 0, "warn": 4, "warning": 4, "error": 8}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def parse_since(text: str, now: float) -> float:
    """C{10m}, C{2h}, C{1d} ago, or an RFC 3339 time, as Unix seconds."""
    match = _AGO.match(text.strip())
    if match:
        return now - float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    try:
        stamp = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CLIError(
            f"invalid --since {text!r}: use a duration like 10m or a time like 2026-01-02T15:04:05Z"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def parse_level(text: str) -> int:
    """A level name (debug, info, warn, error) or a slog number."""
    if text.lower() in LEVELS:
        return LEVELS[text.lower()]
    try:
        return int(text)
    except ValueError:
        raise CLIError(f"invalid --level {text!r}: use debug, info, warn or error") from None


def logs(argv: list[str]) -> int:
    """Follow a node's log (or, with --audit, its audit trail) until interrupted."""
    p = session.parser("logs", logs.__doc__)
    p.add_argument("host", nargs="?", metavar="HOST", help="the node (default: the first of $MINIO_KMS_SERVER)")
    p.add_argument("--level", default="info", help="lowest level shown: debug, info, warn, error")
    p.add_argument("--since", metavar="WHEN", help="first replay the node's records since WHEN (10m, 2h, a time)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--audit", action="store_true", help="follow the audit trail instead")
    p.add_argument("--grep", default="", metavar="TEXT", help="only records containing TEXT")
    args = p.parse_args(argv)
    request = pb.LogRequest(Level=parse_level(args.level), Message=args.grep)
    if args.since:
        request.Since.FromNanoseconds(int(parse_since(args.since, time.time()) * 1e9))
    host = args.host.removeprefix("https://").removeprefix("http://") if args.host else None
    path = "/v1/debug/log?audit" if args.audit else "/v1/debug/log"

    async def command(client, args):
        pending = [b""]

        def deliver(data):
            records, pending[0] = decode_log_records(pending[0] + data)
            for record in records:
                print(_render(record, args), flush=True)

        await client.stream(b"POST", path, request.SerializeToString(), deliver, host=host)

    return session.run(command, args)


def _render(record, args) -> str:
    from minkms.server.logstream import Record, format_line

    if args.audit:
        return record.Message
    seconds = record.Time.seconds + record.Time.nanos / 1e9
    return format_line(Record(record.Level, seconds, record.Message, ()), args.json)


def audit(argv: list[str]) -> int:
    """Check an audit trail: minkms audit verify FILE..."""
    p = ArgumentParser(prog="minkms audit", description=audit.__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    verify = sub.add_parser("verify", help="name the first deleted, reordered or edited record")
    verify.add_argument("files", nargs="+", metavar="FILE")
    args = p.parse_args(argv)
    files = [(path, session.read_file(path)) for path in args.files]
    files.sort(key=_first_seq)
    key = _seal_key()
    report = chain.verify(files, key)
    if report.problem is not None:
        raise CLIError(str(report.problem))
    print(f"ok: {report.records} records, {report.seals} seals ({report.unsealed_tail} records after the last seal)")
    if key is None:
        sys.stderr.write("minkms: warning: MINIO_KMS_HSM_KEY is not set: seals were not checked\n")
    return 0


def _first_seq(item) -> int:
    head = chain.head_after(item[1].split(b"\n", 1)[0])
    return head.seq if head is not None else -1


def _seal_key() -> bytes | None:
    text = os.environ.get("MINIO_KMS_HSM_KEY") or os.environ.get("MINIO_HSM_KMS_KEY")
    if not text:
        return None
    try:
        return SoftHSM.parse(text).audit_seal_key()
    except HSMKeyError as e:
        raise CLIError(f"{e} (from $MINIO_KMS_HSM_KEY)") from None


def profile(argv: list[str]) -> int:
    """Profile a node for some seconds and save the TAR of profiles."""
    p = session.parser("profile", profile.__doc__)
    p.add_argument("host", metavar="HOST")
    p.add_argument("--seconds", type=float, default=10.0, metavar="N", help="how long to profile (default 10)")
    p.add_argument("--heap", action="store_true", help="also trace memory allocations")
    p.add_argument("-o", "--output", default="profile.tar", metavar="FILE", help="where to write (profile.tar)")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        raise CLIError("--seconds must be positive")
    host = args.host.removeprefix("https://").removeprefix("http://")
    heap = "true" if args.heap else "false"

    async def command(client, args):
        await _checked(client, b"POST", f"/v1/debug/pprof?cpu=true&heap={heap}", host)
        from twisted.internet import reactor

        await task.deferLater(reactor, args.seconds, lambda: None)
        archive = await _checked(client, b"DELETE", "/v1/debug/pprof", host)
        with open(args.output, "wb") as f:
            f.write(archive)
        print(f"Wrote {len(archive)} bytes of profiles to {args.output} (cpu.pstats: python -m pstats)")

    return session.run(command, args)


async def _checked(client, method: bytes, path: str, host: str) -> bytes:
    from minkms.wire import errors as wire_errors

    status, ctype, data = await client.request(
        method, path, b"" if method == b"POST" else None, host=host, accept=b"application/octet-stream"
    )
    if status != 200:
        raise wire_errors.parse_error(status, ctype.decode("latin-1"), data)
    return data


CLIENT_VARIABLES = ("MINIO_KMS_SERVER", "MINIO_KMS_API_KEY", "MINIO_KMS_ENCLAVE", "MINIO_KMS_SSE_KEY")
SERVER_VARIABLES = ("MINIO_KMS_HSM_KEY", "MINIO_HSM_KMS_KEY")


def describe(name: str, value: str | None) -> str:
    """How C{minkms env} shows one variable: secrets masked, with what they identify."""
    if value is None:
        if name == "MINIO_KMS_SERVER":
            return f"(not set; default {DEFAULT_SERVER})"
        return "(not set)"
    if name == "MINIO_KMS_API_KEY":
        try:
            return f"{value[:3]}**** (identity {APIKey.parse(value).identity})"
        except APIKeyError:
            return "**** (not a valid API key)"
    if name in SERVER_VARIABLES:
        try:
            hsm = SoftHSM.parse(value)
        except HSMKeyError:
            return "**** (not a valid HSM key)"
        return f"hsm:aes256:**** (SysAdmin identity {APIKey.parse(hsm.sysadmin_api_key()).identity})"
    return value


def env(argv: list[str]) -> int:
    """Show the client and server variables in effect, secrets masked."""
    p = ArgumentParser(prog="minkms env", description=env.__doc__)
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    shown = {name: describe(name, os.environ.get(name)) for name in CLIENT_VARIABLES + SERVER_VARIABLES}
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        for group, names in (("Client", CLIENT_VARIABLES), ("Server", SERVER_VARIABLES)):
            print(f"{group}:")
            for name in names:
                print(f"  {name}={shown[name]}")
    return 0


COMMANDS = {"logs": logs, "audit": audit, "profile": profile, "env": env}
