"""
What every client command shares: its common flags, one run of the
reactor around a L{KMSClient}, the enclave to talk to, and list paging.

Every failure ends as a L{CLIError} (one line, exit 1): server errors
print their message, connection and settings problems theirs.
"""

import os
import sys

from twisted.internet import defer, task

from minkms.cli import render
from minkms.cli.output import ArgumentParser, CLIError
from minkms.client import ClientError, KMSClient
from minkms.errors import KMSError
from minkms.tls import TLSConfigError, load_ca_directory
from minkms.wire.commands import BY_CODE


def parser(prog: str, description: str, enclave: bool = False, json: bool = False) -> ArgumentParser:
    """
    An argument parser with the flags of every client command (C{-a},
    C{-k}) and, when asked, C{-e/--enclave} and C{--json}.
    """
    p = ArgumentParser(prog=f"minkms {prog}", description=description)
    p.add_argument("-a", "--api-key", metavar="KEY", help="API key (default: $MINIO_KMS_API_KEY)")
    p.add_argument("-k", "--insecure", action="store_true", help="skip verification of the server certificate")
    p.add_argument(
        "--cacert",
        metavar="FILE",
        help="trust the CA certificate(s) in FILE or directory (default: the system's, or $SSL_CERT_FILE)",
    )
    if enclave:
        p.add_argument(
            "-e",
            "--enclave",
            metavar="NAME",
            default=os.environ.get("MINIO_KMS_ENCLAVE") or None,
            help="enclave (default: $MINIO_KMS_ENCLAVE)",
        )
    if json:
        p.add_argument("--json", action="store_true", help="print JSON")
    return p


def deleter(prog: str, description: str, code: int, request, noun: str, metavar: str = "NAME", enclave: bool = True):
    """
    A C{minkms rm-*} command: delete each named item in turn with command
    C{code} and C{request(name)}, saying so for each.
    """

    def main(argv: list[str]) -> int:
        p = parser(prog, description, enclave=enclave)
        p.add_argument("names", nargs="+", metavar=metavar)
        args = p.parse_args(argv)
        scope = enclave_of(args) if enclave else ""

        async def command(client, args):
            for name in args.names:
                await client.call(code, request(name), enclave=scope)
                print(f"Deleted {noun} {name}")

        return run(command, args)

    main.__doc__ = description
    return main


def lister(prog: str, description: str, code: int, columns: tuple, row, enclave: bool = True):
    """
    A C{minkms ls-*} command: every item whose name starts with PREFIX, all
    pages, as a table of C{columns} (C{row(item)} gives a row) or as JSON.
    """

    def main(argv: list[str]) -> int:
        p = parser(prog, description, enclave=enclave, json=True)
        p.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
        args = p.parse_args(argv)
        scope = enclave_of(args) if enclave else ""

        async def command(client, args):
            found = await list_all(client, code, args.prefix, enclave=scope)
            if args.json:
                render.print_messages(found)
            elif found:
                render.table(columns, [row(item) for item in found])

        return run(command, args)

    main.__doc__ = description
    return main


def read_file(path: str) -> bytes:
    """The bytes of a file the user named, or a one-line error."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror}") from None


def enclave_of(args) -> str:
    """The enclave an enclave-scoped command targets; it must be named."""
    if not args.enclave:
        raise CLIError("no enclave: use -e/--enclave NAME or set MINIO_KMS_ENCLAVE")
    return args.enclave


def run(command, args) -> int:
    """
    Run C{await command(client, args)} in the reactor and return its exit
    status (0 when it returns None).

    @raise CLIError: for every failure, including server errors.
    """
    outcome = {}
    cas = _ca_certificates(args.cacert)

    async def main(reactor):
        try:
            client = KMSClient.from_environment(
                reactor, api_key=args.api_key, insecure=args.insecure, ca_certificates=cas
            )
        except ClientError as e:
            outcome["error"] = str(e)
            return
        try:
            if client.api_key is None:
                raise CLIError("no API key: set MINIO_KMS_API_KEY or use -a/--api-key")
            outcome["status"] = await command(client, args) or 0
        except KMSError as e:
            outcome["error"] = e.message.strip() or f"server error {e.status}"
        except (ClientError, CLIError) as e:
            outcome["error"] = str(e)
        except BrokenPipeError:
            outcome["broken_pipe"] = True
        except Exception as e:  # a bug: still one line, never a traceback
            outcome["error"] = f"unexpected {type(e).__name__}: {e}"
        finally:
            await client.close()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit:
        pass
    if "broken_pipe" in outcome:
        raise BrokenPipeError()
    if "error" in outcome:
        raise CLIError(outcome["error"])
    if "status" not in outcome:
        raise KeyboardInterrupt  # the reactor stopped before the command ended
    return outcome["status"]


def _ca_certificates(path: str | None):
    """The certificates of C{--cacert}, or None for the system's trust store."""
    if path is None:
        return None
    try:
        return load_ca_directory(path, warn=lambda line: sys.stderr.write(f"minkms: warning: {line}\n"))
    except TLSConfigError as e:
        raise CLIError(f"--cacert: {e}") from None


async def list_all(client: KMSClient, code: int, prefix: str = "", enclave: str = "", limit: int = 0) -> list:
    """
    Every item of a LIST command, following C{ContinueAt} page by page
    until the server says the listing is complete (spec section 5.1).
    """
    request_type = BY_CODE[code].request
    items: list = []
    continue_at = ""
    while True:
        request = request_type(Prefix=prefix, ContinueAt=continue_at, Limit=limit)
        page = await client.call(code, request, enclave=enclave)
        batch = _items(page)
        items.extend(batch)
        if not page.ContinueAt or not batch or page.ContinueAt == continue_at:
            return items
        continue_at = page.ContinueAt


def _items(page) -> list:
    field = page.DESCRIPTOR.fields_by_number[1]
    return list(getattr(page, field.name))
