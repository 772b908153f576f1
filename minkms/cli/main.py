"""
The C{minkms} command: one entry point for the server, local tools and
the client commands of the MinIO KMS CLI.

Every failure is one line on stderr and a non-zero exit; no tracebacks.
"""

import difflib
import os
import sys

from minkms import version
from minkms.cli import local
from minkms.cli.output import CLIError, fail

USAGE = """minkms COMMAND [ARGS...]

Server and local tools:
  server VOLUME      start a node (--host, --address, --config, --dev)
  cluster --dev      start a local 3-node cluster on embedded defaults
  identity [KEY]     make an API key, or show the identity of a key
  --soft-hsm         print a new software HSM key
  --version          print the version

Cluster (SysAdmin):
  add HOST           add a fresh node to the cluster
  rm HOST            remove a node from the cluster
  edit HOST --rm ID  drop node IDs from one node's membership (no quorum)
  stat | ls          show the status of every node
  backup [FILE]      save a sealed snapshot of the state
  restore HOST FILE  restore a sealed snapshot on a node

Operations:
  logs [HOST]        follow a node's log (--level, --since, --json; --audit)
  audit verify FILE  check an audit trail; names the first bad record
  profile HOST       profile a node (--seconds N, -o FILE)
  env                the client and server variables in effect (masked)

Enclaves, keys, identities and policies:
  add-enclave, rm-enclave, ls-enclave, stat-enclave
  add-key, rm-key, ls-key, stat-key, keygen, encrypt, decrypt
  add-identity, rm-identity, ls-identity, get-identity
  add-policy, rm-policy, ls-policy, get-policy, stat-policy, set-policy

Client settings: MINIO_KMS_SERVER (comma list), MINIO_KMS_API_KEY,
or -a/--api-key, -k/--insecure, -e/--enclave, --json.
"""


def _commands() -> dict:
    from minkms.cli import client_commands

    table = dict(local.COMMANDS)
    table.update(client_commands.COMMANDS)
    return table


def main(argv: list[str] | None = None) -> int:
    """Run C{minkms ARGV}; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help", "help"):
            sys.stdout.write(USAGE)
            return 0 if argv else 2
        if argv[0] == "--version":
            print(f"minkms version {version.VERSION} (commit={version.COMMIT})")
            return 0
        if argv[0] == "--soft-hsm":
            return local.soft_hsm(argv[1:])
        commands = _commands()
        command = commands.get(argv[0])
        if command is None:
            raise CLIError(_unknown(argv[0], commands))
        return command(argv[1:]) or 0
    except CLIError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_gone()


def _unknown(name: str, commands) -> str:
    """The error for an unknown command, naming the nearest one."""
    near = difflib.get_close_matches(name, [*commands, "--soft-hsm", "--version"], n=1)
    hint = f"did you mean '{near[0]}'?" if near else "see 'minkms --help'"
    return f"unknown command '{name}'; {hint}"


def _reader_gone() -> int:
    """
    Our output's reader went away (C{minkms stat --json | head}): stop
    quietly, and keep Python from complaining when it flushes stdout.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
