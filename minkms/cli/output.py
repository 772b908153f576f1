"""How the CLI talks to people: one-line errors, and human or JSON output."""

import argparse
import json
import sys


class CLIError(Exception):
    """A failure reported as one line on stderr with exit status 1."""


def fail(message: str, status: int = 1) -> int:
    """Print C{minkms: error: MESSAGE} and return C{status}."""
    sys.stderr.write(f"minkms: error: {message}\n")
    return status


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one-line L{CLIError}s."""

    def error(self, message):
        raise CLIError(f"{self.prog}: {message}")


def print_json(value) -> None:
    """Print C{value} as indented JSON."""
    print(json.dumps(value, indent=2, sort_keys=False))
