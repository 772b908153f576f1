"""
Commands that run locally without a server: C{--soft-hsm}, C{identity},
and the commands that start servers (C{server}, C{cluster --dev}).
"""

import os
import stat
import sys

from minkms.apikey import APIKey, APIKeyError, generate_api_key, identity_of_certificate
from minkms.cli.output import ArgumentParser, CLIError, print_json
from minkms.hsm import HSMKeyError, SoftHSM


def soft_hsm(argv: list[str]) -> int:
    """
    C{minkms --soft-hsm}: print a new software HSM key.  The key goes to
    stdout (so C{KEY=$(minkms --soft-hsm)} works), the notice to stderr.
    """
    if argv:
        raise CLIError("--soft-hsm takes no arguments")
    print(SoftHSM.generate().to_text())
    sys.stderr.write(
        "This is the only time it is shown. Keep it secret and secure!\n"
        "Use the same HSM key on every node of a cluster (MINIO_KMS_HSM_KEY).\n"
    )
    return 0


def show_new_key(api_key: str, identity: str, as_json: bool) -> None:
    if as_json:
        print_json({"api_key": api_key, "identity": identity})
        return
    print("Your API key:\n")
    print(f"   {api_key}\n")
    print("This is the only time it is shown. Keep it secret and secure!\n")
    print("Your API key's identity:\n")
    print(f"   {identity}\n")
    print("The identity is not a secret and can be shared securely.")
    print("Peers need this identity to verify your API key.\n")
    print(f"This identity can be re-computed again using:\n   $ minkms identity {api_key}")


def identity(argv: list[str]) -> int:
    """
    C{minkms identity [HSM-KEY | API-KEY | CERT-FILE | -]}: with an HSM
    key the SysAdmin API key derived from it; with an API key or a
    certificate file its identity; with no argument a new key pair.  So
    that an HSM key need not appear in the process list or the shell
    history, the key may come on standard input (C{-}, or piped with no
    argument) or from C{$MINIO_KMS_HSM_KEY}.
    """
    parser = ArgumentParser(prog="minkms identity", description=identity.__doc__)
    parser.add_argument("key", nargs="?")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    text = _key_text(args.key, sys.stdin, os.environ)
    if text is None:
        key = generate_api_key()
        show_new_key(key, APIKey.parse(key).identity, args.json)
        return 0
    if text.startswith("hsm:"):
        try:
            hsm = SoftHSM.parse(text)
        except HSMKeyError as e:
            raise CLIError(str(e)) from None
        key = hsm.sysadmin_api_key()
        show_new_key(key, APIKey.parse(key).identity, args.json)
        return 0
    if text.startswith(("k1:", "k2:")):
        try:
            ident = APIKey.parse(text).identity
        except APIKeyError as e:
            raise CLIError(str(e)) from None
    else:
        ident = _identity_of_file(text)
    if args.json:
        print_json({"identity": ident})
    else:
        print(ident)
    return 0


def _piped(stream) -> bool:
    """Whether C{stream} is a pipe or a file (not a terminal, not /dev/null)."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def _key_text(argument: str | None, stdin, environ) -> str | None:
    """
    The key C{minkms identity} acts on: the argument; standard input for
    C{-} or when piped; else C{$MINIO_KMS_HSM_KEY}; C{None} for a new pair.
    """
    if argument is not None and argument != "-":
        return argument.strip()
    if argument == "-" or _piped(stdin):
        text = stdin.read().strip()
        if text:
            return text
        if argument == "-":
            raise CLIError("no key on standard input")
    from minkms.server.config import HSM_ENV

    for name in HSM_ENV:
        if environ.get(name):
            return environ[name].strip()
    return None


def _identity_of_file(path: str) -> str:
    from minkms.tls import TLSConfigError, load_certificate_chain

    try:
        return identity_of_certificate(load_certificate_chain(path)[0])
    except TLSConfigError as e:
        raise CLIError(f"not an HSM key, API key or certificate file: {e}") from None


def server(argv: list[str]) -> int:
    """C{minkms server VOLUME ...}: the friendly front of C{twistd -n minkms}."""
    from minkms.cli.serve import run_server

    return run_server(argv)


def cluster(argv: list[str]) -> int:
    """C{minkms cluster --dev}: a local 3-node cluster on embedded defaults."""
    from minkms.cli.devcluster import run_dev_cluster

    return run_dev_cluster(argv)


COMMANDS = {"identity": identity, "server": server, "cluster": cluster}
