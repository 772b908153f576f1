"""
The server's settings: command-line options, environment and C{config.yaml}.

The file is the guide's::

    version: v1
    tls:
      certs:
      - key: /etc/minkms/certs/private.key
        cert: /etc/minkms/certs/public.crt
      ca: /etc/minkms/certs/CAs

C{ca} is also accepted inside a C{certs} item, since the guide's flattened
text reads either way.  Optional sections: C{admin.identity} (replaces the
SysAdmin identity derived from the HSM key), C{cluster.heartbeat} /
C{cluster.election_timeout} (durations such as C{250ms}, C{1.5s}),
C{cluster.snapshot_entries} (entries applied between log compactions),
C{cluster.read_lease} (how long a follower's read lease lasts),
C{cluster.reads_without_leader} (C{serve} or C{refuse}), and C{limits.*},
the connection limits of L{minkms.server.limits.ConnectionLimits}.
Every problem is reported as one L{StartupError} line.
"""

import os
import re

import attrs
import yaml

from minkms.apikey import is_identity
from minkms.errors import StartupError
from minkms.hsm import HSMKeyError, SoftHSM
from minkms.server.limits import COUNTS, DURATIONS, ConnectionLimits
from minkms.tls import ServerCredentials, TLSConfigError, load_ca_directory

HSM_ENV = ("MINIO_KMS_HSM_KEY", "MINIO_HSM_KMS_KEY")
DEFAULT_PORT = 7373
DEFAULT_ADDRESS = "0.0.0.0:7373"
DEFAULT_HEARTBEAT = 0.1
DEFAULT_ELECTION_TIMEOUT = 1.0
DEFAULT_SNAPSHOT_ENTRIES = 1000
DEFAULT_READ_LEASE = 1.0
DEFAULT_READS_WITHOUT_LEADER = "serve"


@attrs.frozen
class FileConfig:
    """What C{config.yaml} says, checked."""

    credentials: list
    ca_certificates: list
    admin_identity: str | None
    heartbeat: float
    election_timeout: float
    snapshot_entries: int
    read_lease: float = DEFAULT_READ_LEASE
    reads_without_leader: str = DEFAULT_READS_WITHOUT_LEADER
    limits: ConnectionLimits = ConnectionLimits()


def hsm_from_environment(environ=os.environ) -> SoftHSM:
    """The soft HSM named by C{MINIO_KMS_HSM_KEY} (or the docs' spelling)."""
    for name in HSM_ENV:
        text = environ.get(name)
        if text:
            try:
                hsm = SoftHSM.parse(text)
            except HSMKeyError as e:
                raise StartupError(f"{e} (from ${name})") from None
            if environ is os.environ:
                drop_from_environment(HSM_ENV)
            return hsm
    raise StartupError("no HSM key: set MINIO_KMS_HSM_KEY to the output of 'minkms --soft-hsm'")


def drop_from_environment(names) -> None:
    """
    Remove secrets from this process's environment, including the copy the
    kernel shows in C{/proc/PID/environ}: the bytes of the original
    environment block are overwritten, since unsetting only unlinks them.
    """
    import ctypes

    libc = ctypes.CDLL(None)
    environ = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, "environ")
    prefixes = tuple(name.encode() + b"=" for name in names)
    located = []
    i = 0
    while environ[i] is not None:
        entry = environ[i]
        if entry.startswith(prefixes):
            address = ctypes.cast(environ, ctypes.POINTER(ctypes.c_void_p))[i]
            located.append((address, len(entry)))
        i += 1
    for name in names:
        os.environ.pop(name, None)
    for address, length in located:
        ctypes.memset(address, 0, length)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_duration(text, what: str) -> float:
    """C{250ms}, C{1.5s}, C{2m} or a number of seconds, as seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise StartupError(f"invalid {what} {text!r}: use a duration like 250ms or 1.5s")
        value, unit = float(match.group(1)), match.group(2) or "s"
        seconds = value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    if seconds <= 0:
        raise StartupError(f"invalid {what} {text!r}: must be positive")
    return seconds


def _section(doc: dict, name: str, path: str) -> dict:
    value = doc.get(name) or {}
    if not isinstance(value, dict):
        raise StartupError(f"invalid config {path}: '{name}' must be a mapping")
    return value


def _path(value, config_path: str) -> str:
    """A file name given in the config, as text; a NUL cannot name a file."""
    text = str(value)
    if "\0" in text:
        raise StartupError(f"invalid config {config_path}: file name {text!r} contains a NUL character")
    return text


def load_config(path: str) -> FileConfig:
    """Read, parse and check C{config.yaml}; load the certificates it names."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise StartupError(f"cannot read config {path}: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise StartupError(f"invalid config {path}: not valid YAML{line}") from None
    except RecursionError:
        raise StartupError(f"invalid config {path}: not valid YAML (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise StartupError(f"invalid config {path}: expected a YAML mapping")
    if doc.get("version") != "v1":
        raise StartupError(f"invalid config {path}: unsupported version {doc.get('version')!r}, expected 'v1'")
    tls = _section(doc, "tls", path)
    certs = tls.get("certs") or []
    if isinstance(certs, dict):
        certs = [certs]
    if not isinstance(certs, list) or not certs:
        raise StartupError(f"invalid config {path}: tls.certs must list key/cert pairs")
    credentials, ca_paths = [], []
    try:
        for item in certs:
            if not isinstance(item, dict) or "key" not in item or "cert" not in item:
                raise StartupError(f"invalid config {path}: each tls.certs item needs 'key' and 'cert'")
            credentials.append(ServerCredentials.from_files(_path(item["cert"], path), _path(item["key"], path)))
            if item.get("ca"):
                ca_paths.append(_path(item["ca"], path))
        if tls.get("ca"):
            ca_paths.append(_path(tls["ca"], path))
        cas = [c for p in ca_paths for c in load_ca_directory(p)]
    except TLSConfigError as e:
        raise StartupError(str(e)) from None
    admin = _section(doc, "admin", path).get("identity")
    if admin is not None and not is_identity(str(admin)):
        raise StartupError(f"invalid config {path}: admin.identity is not an h1: identity")
    cluster = _section(doc, "cluster", path)
    heartbeat = parse_duration(cluster.get("heartbeat", DEFAULT_HEARTBEAT), "cluster.heartbeat")
    election = parse_duration(cluster.get("election_timeout", DEFAULT_ELECTION_TIMEOUT), "cluster.election_timeout")
    if election < 2 * heartbeat:
        raise StartupError(f"invalid config {path}: cluster.election_timeout must be at least twice cluster.heartbeat")
    snapshot_entries = cluster.get("snapshot_entries", DEFAULT_SNAPSHOT_ENTRIES)
    if not isinstance(snapshot_entries, int) or isinstance(snapshot_entries, bool) or snapshot_entries < 1:
        raise StartupError(f"invalid config {path}: cluster.snapshot_entries must be a positive integer")
    raw_lease = cluster.get("read_lease", DEFAULT_READ_LEASE)
    read_lease = 0.0 if raw_lease in (0, "0", "0s") else parse_duration(raw_lease, "cluster.read_lease")
    if read_lease and read_lease < 2 * heartbeat:
        raise StartupError(
            f"invalid config {path}: cluster.read_lease must be 0 (off) or at least twice cluster.heartbeat"
        )
    reads = cluster.get("reads_without_leader", DEFAULT_READS_WITHOUT_LEADER)
    if reads not in ("serve", "refuse"):
        raise StartupError(f"invalid config {path}: cluster.reads_without_leader must be serve or refuse")
    limits = load_limits(_section(doc, "limits", path), path)
    return FileConfig(credentials, cas, admin, heartbeat, election, snapshot_entries, read_lease, reads, limits)


def load_limits(section: dict, path: str) -> ConnectionLimits:
    """The C{limits:} section: durations and positive counts, checked."""
    unknown = sorted(set(section) - set(DURATIONS) - set(COUNTS))
    if unknown:
        raise StartupError(f"invalid config {path}: unknown setting limits.{unknown[0]}")
    values = {}
    for name in DURATIONS:
        if name in section:
            values[name] = parse_duration(section[name], f"limits.{name}")
    for name in COUNTS:
        if name in section:
            value = section[name]
            minimum = 0 if name == "reserved_connections" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise StartupError(f"invalid config {path}: limits.{name} must be an integer of at least {minimum}")
            values[name] = value
    return ConnectionLimits(**values)


def split_host_port(text: str, what: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Split C{host[:port]} (IPv6 in brackets); the port defaults to 7373."""
    text = text.strip()
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.rstrip("/")
    if not text:
        raise StartupError(f"invalid {what}: empty")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise StartupError(f"invalid {what} {text!r}: missing ']'")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise StartupError(f"invalid {what} {text!r}")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        host, port_text = text, ""
    else:
        host, port_text = text, ""
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StartupError(f"invalid {what} {text!r}: bad port")
    return host, int(port_text)


def join_host_port(host: str, port: int) -> str:
    """The inverse of L{split_host_port}."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"
