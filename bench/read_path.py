"""
Benchmark of the read path MinIO hammers: KEY:GENERATE then KEY:DECRYPT,
over mTLS keep-alive connections, against a real C{minkms server} process,
compared with the ceiling of a trivial C{twisted.web} TLS resource.

Run from the repository root (never part of the tests)::

    .venv/bin/python bench/read_path.py [--seconds 10] [--clients 16] [--audit]

With C{--audit} it runs minkms twice, without and with the audit trail
(C{config.yaml} C{audit.file}), and prints the cost of the trail instead
of the ceiling comparison.

Three kinds of process, all started by this script:

  - the target: C{python -m minkms.cli.main server --dev} (single node) or
    the ceiling server (C{read_path.py ceiling-server}: one process, a
    C{twisted.web} resource answering 32 bytes, with the same TLS context
    factory and kind of certificate as minkms, TCP_NODELAY, no access log
    and no POST form parsing: the best twisted.web does);
  - the load generator (C{read_path.py loadgen}), a separate process:
    raw asyncio + stdlib C{ssl}, N clients each on its own keep-alive mTLS
    connection presenting a C{k1:} API-key certificate, sending the same
    two requests (a GenerateKey frame, then a Decrypt frame) to either
    target, one request in flight per connection;
  - this orchestrator, which sets up the enclave and key, runs the load
    generator against each target in turn and prints the figures.

Requests/s counts both requests of a pair; latencies are per request, from
writing the request to having read the whole response.
"""

import argparse
import asyncio
import json
import os
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from minkms.apikey import APIKey, generate_api_key  # noqa: E402
from minkms.hsm import SoftHSM  # noqa: E402
from minkms.wire import kms_pb2 as pb  # noqa: E402

ENCLAVE = "bench"
KEY = "bench-key"
AAD = b'{"bucket":"photos","object":"2025/01/01/img-0001.jpg"}'
CEILING_BODY = b"0123456789abcdef0123456789abcdef"


def frame(code: int, message) -> bytes:
    payload = message.SerializeToString()
    return struct.pack(">HI", code, len(payload)) + payload


def http_request(path: str, body: bytes, host: str) -> bytes:
    """A POST as Go's transport writes it (header set and order alike)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n"
        f"Content-Length: {len(body)}\r\nAccept: application/*\r\n"
        "Content-Type: application/octet-stream\r\nAccept-Encoding: gzip\r\n\r\n"
    ).encode("ascii") + body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_context(api_key: str, directory: str) -> ssl.SSLContext:
    """A stdlib TLS client context presenting the API key's certificate."""
    from cryptography.hazmat.primitives import serialization

    key = APIKey.parse(api_key)
    cert_path = os.path.join(directory, "client.crt")
    key_path = os.path.join(directory, "client.key")
    with open(cert_path, "wb") as f:
        f.write(key.certificate().public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def read_response_sync(tls) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, length = _parse_head(head)
    while len(rest) < length:
        chunk = tls.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        rest += chunk
    return status, rest[:length]


def _parse_head(head: bytes) -> tuple[int, int]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError(f"response without Content-Length: {head!r}")
    return status, length


def call_sync(ctx, port: int, path: str, body: bytes | None, method="POST") -> tuple[int, bytes]:
    """One request on a fresh connection (set-up only, not measured)."""
    host = f"127.0.0.1:{port}"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock) as tls:
            if method == "POST":
                tls.sendall(http_request(path, body, host))
            else:
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            return read_response_sync(tls)


def wait_ready(ctx, port: int, process, timeout=60.0, path="/v1/health/ready?write") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server exited with status {process.returncode}")
        try:
            status, _ = call_sync(ctx, port, path, None, method="GET")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("server not ready in time")
        time.sleep(0.1)


def pinned(cpu):
    """A preexec_fn pinning the child process to one CPU (None: no pinning)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- load generator (a separate process) ---------------------------------------


async def _read_response(reader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status, length = _parse_head(head[:-4])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _client(ctx, port, target, state, latencies, errors, sample_ciphertext):
    host = f"127.0.0.1:{port}"
    path = f"/v1/kms/{ENCLAVE}"
    generate = http_request(path, frame(207, pb.GenerateKeyRequest(Name=KEY, AssociatedData=AAD)), host)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=None)
    try:
        while not state["stop"]:
            t0 = time.perf_counter()
            writer.write(generate)
            status, body = await _read_response(reader)
            t1 = time.perf_counter()
            if status != 200:
                errors.append(f"generate: {status} {body[:200]!r}")
                continue
            if target == "kms":
                dek = pb.GenerateKeyResponse.FromString(body[6:])
                ciphertext, expected = dek.Ciphertext, dek.Plaintext
            else:
                ciphertext, expected = sample_ciphertext, None
            decrypt = http_request(
                path, frame(206, pb.DecryptRequest(Name=KEY, Ciphertext=ciphertext, AssociatedData=AAD)), host
            )
            writer.write(decrypt)
            status, body = await _read_response(reader)
            t2 = time.perf_counter()
            if status != 200:
                errors.append(f"decrypt: {status} {body[:200]!r}")
                continue
            if expected is not None and pb.DecryptResponse.FromString(body[6:]).Plaintext != expected:
                errors.append("decrypt: wrong plaintext")
            if state["measuring"]:
                latencies.append(t1 - t0)
                latencies.append(t2 - t1)
    finally:
        writer.close()


async def _loadgen(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-client-") as directory:
        ctx = client_context(args.api_key, directory)
    state = {"stop": False, "measuring": False}
    latencies: list[float] = []
    errors: list[str] = []
    sample = bytes.fromhex(args.sample_ciphertext)
    tasks = [
        asyncio.ensure_future(_client(ctx, args.port, args.target, state, latencies, errors, sample))
        for _ in range(args.clients)
    ]
    await asyncio.sleep(args.warmup)
    state["measuring"] = True
    cpu0, wall0 = time.process_time(), time.perf_counter()
    server_cpu0 = cpu_seconds(args.server_pid) if args.server_pid else None
    await asyncio.sleep(args.seconds)
    state["measuring"] = False
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    server_cpu = cpu_seconds(args.server_pid) - server_cpu0 if args.server_pid else None
    state["stop"] = True
    done = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [repr(d) for d in done if isinstance(d, BaseException)]
    latencies.sort()
    n = len(latencies)
    return {
        "target": args.target,
        "clients": args.clients,
        "seconds": wall,
        "requests": n,
        "rps": n / wall,
        "p50_ms": 1000 * latencies[n // 2] if n else None,
        "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else None,
        "mean_ms": 1000 * statistics.fmean(latencies) if n else None,
        "loadgen_cpu": cpu / wall,
        "server_cpu": server_cpu / wall if server_cpu is not None else None,
        "server_us_per_request": 1e6 * server_cpu / n if server_cpu is not None and n else None,
        "errors": len(errors),
        "first_errors": errors[:3],
        "client_failures": failures[:3],
    }


def loadgen_main(args) -> None:
    result = asyncio.run(_loadgen(args))
    print(json.dumps(result))


# --- ceiling server ------------------------------------------------------------


def ceiling_main(args) -> None:
    """
    A trivial twisted.web TLS resource: 32 bytes for any POST or GET, with
    minkms's TLS context factory (client certificate requested, session
    cache, ALPN) and TCP_NODELAY, tuned as well as twisted.web allows.
    """
    from twisted.internet import reactor
    from twisted.web import resource, server

    from minkms.server.logstream import start_logging
    from minkms.server.service import dev_credentials
    from minkms.tls import ServerContextFactory

    class Fixed(resource.Resource):
        isLeaf = True

        def render_POST(self, request):
            request.content.read()
            request.setHeader(b"content-type", b"application/octet-stream")
            return CEILING_BODY

        render_GET = render_POST

    class NoDelaySite(server.Site):
        """Small responses must not wait for Nagle's algorithm (as minkms does)."""

        def buildProtocol(self, addr):
            channel = super().buildProtocol(addr)
            made = channel.connectionMade

            def connectionMade():
                try:
                    channel.transport.setTcpNoDelay(True)
                except (AttributeError, OSError):
                    pass
                made()

            channel.connectionMade = connectionMade
            return channel

    # The best twisted.web can do for this load: no access-log line per
    # request and no form parsing of POST bodies (which costs an
    # email.message parse of Content-Type per request).
    site = NoDelaySite(Fixed(), parsePOSTFormSubmission=False)
    site.log = lambda request: None
    site.noisy = False
    reactor.listenSSL(args.port, site, ServerContextFactory([dev_credentials("127.0.0.1")]), interface="127.0.0.1")
    start_logging()
    reactor.run()


# --- orchestrator ----------------------------------------------------------------


def stop(process) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_loadgen(args, port, api_key, target, server_pid, sample_ciphertext=b"") -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "loadgen",
        "--port",
        str(port),
        "--api-key",
        api_key,
        "--target",
        target,
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--clients",
        str(args.clients),
        "--server-pid",
        str(server_pid),
        "--sample-ciphertext",
        sample_ciphertext.hex(),
    ]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=args.seconds * 4 + 120,
        preexec_fn=pinned(args.loadgen_cpu),
    )
    if out.returncode != 0:
        raise SystemExit(f"load generator failed:\n{out.stderr}")
    return json.loads(out.stdout)


def audit_config(workdir: str) -> str:
    """A config.yaml with a fresh certificate and the audit trail on."""
    from cryptography.hazmat.primitives import serialization

    from minkms.server.service import dev_credentials

    creds = dev_credentials("127.0.0.1")
    directory = tempfile.mkdtemp(dir=workdir)
    key_path, cert_path = os.path.join(directory, "private.key"), os.path.join(directory, "public.crt")
    with open(key_path, "wb") as f:
        f.write(
            creds.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    with open(cert_path, "wb") as f:
        f.write(creds.chain[0].public_bytes(serialization.Encoding.PEM))
    path = os.path.join(directory, "config.yaml")
    with open(path, "w") as f:
        f.write(
            f"version: v1\ntls:\n  certs:\n  - key: {key_path}\n    cert: {cert_path}\n"
            f"audit:\n  file: {os.path.join(directory, 'audit.log')}\n"
        )
    return path


def bench_kms(args, workdir, audit: bool = False) -> tuple[dict, bytes]:
    hsm = SoftHSM.generate()
    port = free_port()
    host = f"127.0.0.1:{port}"
    env = dict(os.environ, MINIO_KMS_HSM_KEY=hsm.to_text(), PYTHONPATH=REPO)
    env = {k: v for k, v in env.items() if k not in ("MINIO_KMS_SERVER", "MINIO_KMS_API_KEY")}
    log = open(os.path.join(workdir, "minkms-server.log"), "wb")
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    config = ["--config", audit_config(workdir)] if audit else []
    process = subprocess.Popen(
        [
            sys.executable,
            *profile,
            "-m",
            "minkms.cli.main",
            "server",
            "--dev",
            "--address",
            host,
            "--host",
            host,
            *config,
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=pinned(args.server_cpu),
    )
    try:
        root = hsm.sysadmin_api_key()
        ctx = client_context(root, tempfile.mkdtemp(dir=workdir))
        wait_ready(ctx, port, process)
        status, body = call_sync(ctx, port, "/v1/kms", frame(101, pb.CreateEnclaveRequest(Name=ENCLAVE)))
        assert status == 200, (status, body)
        path = f"/v1/kms/{ENCLAVE}"
        status, body = call_sync(ctx, port, path, frame(201, pb.CreateKeyRequest(Name=KEY)))
        assert status == 200, (status, body)
        # MinIO's identity: a User allowed exactly the read path on this key.
        policy = pb.CreatePolicyRequest(Name="minio")
        for action in ("KEY:GENERATE", "KEY:DECRYPT"):
            policy.Allow[action].Rules[KEY].SetInParent()
        status, body = call_sync(ctx, port, path, frame(301, policy))
        assert status == 200, (status, body)
        minio = generate_api_key()
        identity = APIKey.parse(minio).identity
        status, body = call_sync(ctx, port, path, frame(401, pb.CreateIdentityRequest(Identity=identity)))
        assert status == 200, (status, body)
        status, body = call_sync(ctx, port, path, frame(303, pb.AssignPolicyRequest(Identity=identity, Policy="minio")))
        assert status == 200, (status, body)
        status, body = call_sync(ctx, port, path, frame(207, pb.GenerateKeyRequest(Name=KEY, AssociatedData=AAD)))
        assert status == 200, (status, body)
        sample = pb.GenerateKeyResponse.FromString(body[6:]).Ciphertext
        result = run_loadgen(args, port, minio, "kms", process.pid)
        return result, sample
    finally:
        stop(process)
        log.close()


def bench_ceiling(args, workdir, sample: bytes) -> dict:
    port = free_port()
    log = open(os.path.join(workdir, "ceiling-server.log"), "wb")
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "ceiling-server", "--port", str(port)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=REPO),
        preexec_fn=pinned(args.server_cpu),
    )
    try:
        api_key = generate_api_key()
        ctx = client_context(api_key, tempfile.mkdtemp(dir=workdir))
        wait_ready(ctx, port, process, path="/")
        return run_loadgen(args, port, api_key, "ceiling", process.pid, sample)
    finally:
        stop(process)
        log.close()


def describe(result: dict) -> str:
    server_cpu = f"{100 * result['server_cpu']:.0f}%" if result["server_cpu"] is not None else "?"
    return (
        f"{result['target']:>8}: {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
        f"p99 {result['p99_ms']:6.2f} ms  ({result['requests']} requests in {result['seconds']:.1f} s, "
        f"server CPU {server_cpu} = {result['server_us_per_request'] or 0:.0f} us/request, "
        f"load generator CPU {100 * result['loadgen_cpu']:.0f}%, errors {result['errors']})"
    )


def machine() -> str:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{usable} usable CPUs ({cpus} online) {model}; Python {sys.version.split()[0]}; {ssl.OPENSSL_VERSION}"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def compare_audit(args, workdir, plain: dict) -> None:
    """
    Alternate runs without and with the audit trail (C{--rounds} pairs)
    and compare the best of each: on a shared machine the best run is the
    least disturbed one.
    """
    runs = {False: [plain], True: []}
    for round_number in range(args.rounds):
        for audit in (True, False) if round_number else (True,):
            result, _ = bench_kms(args, workdir, audit=audit)
            runs[audit].append(result)
            print(describe(result).replace("     kms:", " audited:" if audit else "     kms:", 1))
    best = {audit: max(results, key=lambda r: r["rps"]) for audit, results in runs.items()}
    cpu = {audit: min(r["server_us_per_request"] or float("inf") for r in results) for audit, results in runs.items()}
    print(
        f"best of {args.rounds}: {best[False]['rps']:.0f} req/s without, {best[True]['rps']:.0f} req/s with "
        f"the audit trail: cost {100 * (1 - best[True]['rps'] / best[False]['rps']):.1f}% of throughput "
        "(aim: under 10%)"
    )
    print(
        f"least server CPU per request: {cpu[False]:.0f} us without, {cpu[True]:.0f} us with "
        f"({100 * (cpu[True] / cpu[False] - 1):+.1f}%)"
    )


def orchestrate(args) -> None:
    workdir = tempfile.mkdtemp(prefix="minkms-bench-")
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if args.pin and len(usable) >= 2:
        args.server_cpu, args.loadgen_cpu = usable[0], usable[1]
    else:
        args.server_cpu = args.loadgen_cpu = None
    print(f"machine: {machine()}")
    print(
        f"before: {load_average()}"
        + ("  (busy machine: figures will be low and noisy)" if os.getloadavg()[0] > 0.5 else "")
    )
    pinning = (
        f"server on CPU {args.server_cpu}, load generator on CPU {args.loadgen_cpu}"
        if args.server_cpu is not None
        else "no CPU pinning"
    )
    print(
        f"load: {args.clients} clients, keep-alive mTLS (k1: certificates), "
        f"GenerateKey + Decrypt, {args.warmup} s warm-up + {args.seconds} s measured; {pinning}"
    )
    kms, sample = bench_kms(args, workdir)
    print(describe(kms))
    if args.audit:
        compare_audit(args, workdir, kms)
        print(f"after: {load_average()}; server logs in {workdir}")
        return
    ceiling = bench_ceiling(args, workdir, sample)
    print(describe(ceiling))
    ratio = kms["rps"] / ceiling["rps"]
    print(f"ratio minkms / ceiling: {ratio:.2f} (aim >= 0.80); minkms p99 {kms['p99_ms']:.2f} ms (aim < 10 ms)")
    if kms["server_us_per_request"] and ceiling["server_us_per_request"]:
        print(
            f"server CPU per request, ceiling / minkms: "
            f"{ceiling['server_us_per_request'] / kms['server_us_per_request']:.2f} "
            "(the throughput ratio a saturated, otherwise idle core would give; aim >= 0.77, "
            "i.e. minkms within 1.3x of the ceiling)"
        )
    if kms["errors"] or ceiling["errors"]:
        print("errors:", kms["first_errors"], ceiling["first_errors"])
    print(f"after: {load_average()}; server logs in {workdir}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--profile", metavar="FILE", help="run the minkms server under cProfile and write its stats to FILE"
    )
    parser.add_argument(
        "--audit", action="store_true", help="compare minkms without and with the audit trail instead of the ceiling"
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --audit: pairs of runs to alternate (default 2)")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server and the load generator to separate CPUs",
    )
    sub = parser.add_subparsers(dest="mode")
    lg = sub.add_parser("loadgen")
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--api-key", required=True)
    lg.add_argument("--target", choices=("kms", "ceiling"), required=True)
    lg.add_argument("--seconds", type=float, default=10.0)
    lg.add_argument("--warmup", type=float, default=2.0)
    lg.add_argument("--clients", type=int, default=16)
    lg.add_argument("--server-pid", type=int, default=0)
    lg.add_argument("--sample-ciphertext", default="")
    cs = sub.add_parser("ceiling-server")
    cs.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.mode == "loadgen":
        loadgen_main(args)
    elif args.mode == "ceiling-server":
        ceiling_main(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
