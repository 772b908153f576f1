"""
How client commands show server answers to people: durations, times,
aligned label/value blocks and tables, and proto-JSON for C{--json}.
"""

import sys
import time

from minkms.cli.output import print_json
from minkms.wire import jsonfmt

GO_ZERO_SECONDS = -62135596800


def duration(seconds: float) -> str:
    """
    A short human duration: C{233ms}, C{31s}, C{5m}, C{24m31s}, C{1h2m},
    C{3d4h}; zero parts are left out and only the two largest units kept.
    """
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    total = int(seconds)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts = []
    for name, span in units:
        if total >= span or parts:
            parts.append((total // span, name))
            total %= span
            if len(parts) == 2:
                break
    return "".join(f"{value}{name}" for value, name in parts if value) or "0s"


def proto_duration(field) -> str:
    """A protobuf Duration as L{duration} text."""
    return duration(field.seconds + field.nanos / 1e9)


def timestamp(field) -> str:
    """A protobuf Timestamp in local time, or C{-} when unset."""
    if field.seconds in (0, GO_ZERO_SECONDS) and field.nanos == 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(field.seconds))


def size(n: int) -> str:
    """A byte count in binary units: C{512B}, C{4.20MiB}."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n}B" if unit == "B" else f"{value:.2f}{unit}"
        value /= 1024
    return f"{value:.2f}GiB"


def block(rows, indent: str = "", width: int = 0) -> None:
    """
    Print C{(label, value)} rows with the values in one column, at least
    C{width} characters from the indent; rows whose value is None are
    left out.
    """
    rows = [(label, value) for label, value in rows if value is not None]
    width = max([width, *(len(label) + 2 for label, _ in rows)])
    for label, value in rows:
        print(f"{indent}{label.ljust(width)}{value}".rstrip())


def table(header, rows) -> None:
    """Print rows under a header, each column as wide as its widest cell."""
    rows = [tuple(str(cell) for cell in row) for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in [tuple(header), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def message_json(message) -> dict:
    """A response as proto-JSON data, every field shown even when zero."""
    return jsonfmt.to_dict(message, defaults=True)


def print_messages(messages) -> None:
    """Print responses as a JSON array of proto-JSON objects."""
    print_json([message_json(m) for m in messages])


def print_message(message) -> None:
    """Print one response as a proto-JSON object."""
    print_json(message_json(message))


def bullet(up: bool) -> str:
    """The status dot of C{minkms stat}: green or red on a terminal."""
    if not sys.stdout.isatty():
        return "●"
    return "\x1b[32m●\x1b[0m" if up else "\x1b[31m●\x1b[0m"
