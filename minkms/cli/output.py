"""How the CLI talks to people: one-line errors, and human or JSON output."""

import argparse
import json
import re
import sys


class CLIError(Exception):
    """A failure reported as one line on stderr with exit status 1."""


def fail(message: str, status: int = 1) -> int:
    """Print C{minkms: error: MESSAGE} and return C{status}."""
    sys.stderr.write(f"minkms: error: {message}\n")
    return status


class ArgumentParser(argparse.ArgumentParser):
    """
    An argparse parser whose usage errors are one-line L{CLIError}s, and
    whose description may be a docstring (its epytext markup is removed).
    """

    def __init__(self, *args, description=None, **kwargs):
        super().__init__(*args, description=plain_text(description), **kwargs)

    def error(self, message):
        raise CLIError(f"{self.prog}: {message}")


_MARKUP = re.compile(r"[BCIL]\{([^}]*)\}")


def plain_text(doc: str | None) -> str | None:
    """A docstring as help text: epytext markup removed, one paragraph."""
    if doc is None:
        return None
    return " ".join(_MARKUP.sub(r"\1", doc).split())


def print_json(value) -> None:
    """Print C{value} as indented JSON."""
    print(json.dumps(value, indent=2, sort_keys=False))
