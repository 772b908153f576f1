"""
Start one node of the fault suite, possibly a deliberately broken one:

    python -m tests.faults.launch [--source IP] [--mutant NAME] -- server VOLUME ...

C{--source} makes the node's outgoing peer connections leave from its own
loopback address, as they would from its own machine, so that the link
proxies can tell which node is dialing.  C{--mutant} applies one of
L{tests.faults.mutations} before the server starts.  Production code holds
no failpoints: everything here is a monkeypatch of the test's own process.
"""

import argparse
import functools
import sys


def bind_source(address: str) -> None:
    """Dial peers from C{address} instead of the kernel's choice (127.0.0.1)."""
    from twisted.internet import endpoints

    from minkms.server import peer

    peer.HostnameEndpoint = functools.partial(endpoints.HostnameEndpoint, bindAddress=(address, 0))


def main(argv: list[str]) -> int:
    """Apply the options, then run C{minkms ARGS} in this process."""
    from tests.faults import mutations

    parser = argparse.ArgumentParser(prog="python -m tests.faults.launch")
    parser.add_argument("--source", help="loopback address the node dials peers from")
    parser.add_argument("--mutant", choices=sorted(mutations.MUTANTS), help="break the server this way")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="minkms arguments, after --")
    options = parser.parse_args(argv)
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    if options.source:
        bind_source(options.source)
    if options.mutant:
        mutations.MUTANTS[options.mutant]()
    from minkms.cli.main import main as minkms_main

    return minkms_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
