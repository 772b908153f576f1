"""Shared test helpers: paths, subprocess CLI runs, certificates."""

import ipaddress
import os
import subprocess
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from minkms.apikey import self_signed_certificate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
VECTORS = os.path.join(SHARED, "vectors")


def vector_path(name: str) -> str:
    """The path of a known-answer file; fails loudly when shared/ is missing."""
    path = os.path.join(VECTORS, name)
    if not os.path.exists(path):
        raise AssertionError(f"known-answer file {path} is missing: shared/ must sit beside the repo")
    return path


def read_tsv(name: str) -> list[dict]:
    """Rows of a vectors TSV file as dicts (header line gives the keys)."""
    with open(vector_path(name), encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


def cli_env(**extra) -> dict:
    """An environment for running the CLI with no inherited KMS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(*args, env=None, timeout=60, input=None) -> subprocess.CompletedProcess:
    """
    Run C{minkms ARGS} in a subprocess and capture its output; standard
    input is C{input}, or empty (never the test runner's own).
    """
    return subprocess.run(
        [sys.executable, "-m", "minkms.cli.main", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=timeout,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
    )


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM a server process and wait; SIGKILL it if it will not stop."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_server_certificate(directory: str, names=("localhost",), ips=("127.0.0.1",)) -> tuple[str, str]:
    """Write a self-signed server key and certificate; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_certificate(
        key,
        names[0],
        client=False,
        dns_names=tuple(names),
        ip_addresses=tuple(ipaddress.ip_address(i) for i in ips),
        days=30,
    )
    key_path = os.path.join(directory, "private.key")
    cert_path = os.path.join(directory, "public.crt")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
