"""
The SysAdmin's cluster commands: C{add}, C{rm}, C{edit}, C{stat}, C{ls},
C{backup} and C{restore}.
"""

import gzip
import os
import time
import zlib

from minkms.cli import render, session
from minkms.cli.output import CLIError, print_json
from minkms.client import ClientError, parse_servers
from minkms.errors import KMSError
from minkms.wire import errors as wire_errors, kms_pb2 as pb
from minkms.wire.commands import CLUSTER_ADDNODE, CLUSTER_EDIT, CLUSTER_REMOVENODE, CLUSTER_STATUS

GZIP_MAGIC = b"\x1f\x8b"
LABELS = 11
FORCE = b"\x78\x01"
"""Field 15 = 1 of C{AddClusterNodeRequest}: minkms's C{--force} (see minkms.server.membership)."""
PROBE_TIMEOUT = 3.0
NOT_MEMBER = "server not part of cluster"


def _host(text: str) -> str:
    """A node argument as the C{host:port} the client and server use."""
    try:
        hosts = parse_servers(text)
    except ClientError:
        hosts = []
    if len(hosts) != 1:
        raise CLIError(f"invalid host '{text}': expected HOST[:PORT]")
    return hosts[0]


def add_node_request(host: str, force: bool = False):
    """The C{AddClusterNodeRequest} for C{minkms add [--force] HOST}."""
    request = pb.AddClusterNodeRequest(Host=host)
    if force:
        request = pb.AddClusterNodeRequest.FromString(request.SerializeToString() + FORCE)
    return request


def add(argv: list[str]) -> int:
    """
    C{minkms add HOST[:PORT]}: join a fresh node to the cluster.  A member
    whose kms.db was deleted (the guide's reset) is replaced by the fresh
    node; a node that holds data is refused unless C{--force}.
    """
    p = session.parser("add", add.__doc__)
    p.add_argument("host", metavar="HOST[:PORT]")
    p.add_argument("--force", action="store_true", help="add the node even if it holds data (its data is dropped)")
    args = p.parse_args(argv)
    host = _host(args.host)

    async def command(client, args):
        await client.call(CLUSTER_ADDNODE, add_node_request(host, args.force))
        print(f"Added node {host} to the cluster")

    return session.run(command, args)


def rm(argv: list[str]) -> int:
    """C{minkms rm HOST[:PORT]}: remove a node from a healthy cluster."""
    p = session.parser("rm", rm.__doc__)
    p.add_argument("host", metavar="HOST[:PORT]")
    p.add_argument("--delete", action="store_true", help="also wipe the cluster definition on the removed node")
    args = p.parse_args(argv)
    host = _host(args.host)

    async def command(client, args):
        request = pb.RemoveClusterNodeRequest(Host=host, DeleteClusterOnHost=args.delete)
        await client.call(CLUSTER_REMOVENODE, request)
        print(f"Removed node {host} from the cluster")

    return session.run(command, args)


def _node_ids(values: list[str]) -> list[int]:
    ids = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item.isdigit():
                raise CLIError(f"invalid node ID '{item}': expected a number")
            ids.append(int(item))
    return ids


def edit(argv: list[str]) -> int:
    """
    C{minkms edit HOST[:PORT] --rm ID...}: drop dead node IDs from one
    node's cluster definition, without quorum (disaster recovery).
    """
    p = session.parser("edit", edit.__doc__)
    p.add_argument("host", metavar="HOST[:PORT]")
    p.add_argument("--rm", action="append", required=True, metavar="ID", help="node ID to remove (repeatable)")
    args = p.parse_args(argv)
    host = _host(args.host)
    ids = _node_ids(args.rm)

    async def command(client, args):
        await client.call(CLUSTER_EDIT, pb.EditClusterRequest(Host=host, RemoveIDs=ids), host=host)
        listed = ", ".join(str(i) for i in ids)
        print(f"Removed node {listed} from the cluster definition of {host}")

    return session.run(command, args)


def _all_nodes(status) -> list[tuple[int, str, object]]:
    """C{(id, host, ServerStatusResponse or None)} for every node, by ID."""
    nodes = [(i, s.Host, s) for i, s in status.NodesUp.items()]
    nodes += [(i, host, None) for i, host in status.NodesDown.items()]
    return sorted(nodes, key=lambda n: n[0])


def _leader(node) -> str:
    return f"Node {node.LeaderID}" if node.LeaderID >= 0 else "none"


def _print_node(node_id: int, host: str, node, verbose: bool, down_state: str = "Offline") -> None:
    print(f"{render.bullet(node is not None)} Node {node_id} at {host}")
    if node is None:
        render.block([("State", down_state)], indent="  ", width=LABELS)
        return
    rows = [
        ("Version", node.Version),
        ("Uptime", render.proto_duration(node.UpTime)),
        ("State", node.Role or "Unknown"),
        ("Leader", _leader(node)),
        ("Commit", str(node.Commit)),
    ]
    if node.HasField("LastHeartbeat"):
        rows.append(("Heartbeat", f"{render.proto_duration(node.LastHeartbeat)} ago"))
    if verbose:
        rows.append(("HSMs", ", ".join(node.HSMs) or "-"))
        rows.append(("System", ""))
    render.block(rows, indent="  ", width=LABELS)
    if verbose:
        render.block(
            [
                ("OS", node.OS),
                ("CPUs", f"{node.CPUs} {node.Arch}"),
                ("Memory", render.size(node.HeapMemInUse)),
            ],
            indent="      ",
        )


async def down_states(client, status) -> dict:
    """
    Why each node the cluster counts as down is down: C{Offline}, or
    C{Not part of the cluster} when the node answers but as another node
    (its kms.db was reset, or the cluster removed it).
    """
    states = {}
    for node_id, host in status.NodesDown.items():
        try:
            own = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest(), host=host, timeout=PROBE_TIMEOUT)
        except KMSError as e:
            member = not e.message.startswith(NOT_MEMBER)
        except ClientError:
            member = True
        else:
            member = all(s.Host != host or i == node_id for i, s in own.NodesUp.items())
        states[node_id] = "Offline" if member else "Not part of the cluster"
    return states


def print_status(status, verbose: bool = False, down: dict | None = None) -> None:
    """Print a C{ClusterStatusResponse} as the operator guide shows it."""
    nodes = _all_nodes(status)
    for i, (node_id, host, node) in enumerate(nodes):
        if i:
            print()
        _print_node(node_id, host, node, verbose, (down or {}).get(node_id, "Offline"))
    up, total = len(status.NodesUp), len(nodes)
    print()
    if up == total:
        print(f"All [{up}/{total}] nodes are up ✔")
    else:
        print(f"[{up}/{total}] nodes are up")


def stat(argv: list[str]) -> int:
    """C{minkms stat}: the status of every node of the cluster."""
    p = session.parser("stat", stat.__doc__, json=True)
    p.add_argument("-v", "--verbose", action="store_true", help="also show HSMs and system information")
    args = p.parse_args(argv)

    async def command(client, args):
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest())
        if args.json:
            render.print_message(status)
        else:
            print_status(status, args.verbose, await down_states(client, status))

    return session.run(command, args)


def _node_summary(node_id: int, host: str, node) -> dict:
    up = node is not None
    return {
        "id": node_id,
        "host": host,
        "up": up,
        "role": node.Role if up else "",
        "uptime": render.proto_duration(node.UpTime) if up else "",
    }


def ls(argv: list[str]) -> int:
    """C{minkms ls}: one line per node: ID, status, role, uptime, host."""
    p = session.parser("ls", ls.__doc__, json=True)
    args = p.parse_args(argv)

    async def command(client, args):
        status = await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest())
        nodes = _all_nodes(status)
        if args.json:
            print_json([_node_summary(i, host, node) for i, host, node in nodes])
            return
        rows = [
            (i, "up", node.Role, render.proto_duration(node.UpTime), host) if node else (i, "down", "-", "-", host)
            for i, host, node in nodes
        ]
        render.table(("ID", "Status", "Role", "Uptime", "Host"), rows)

    return session.run(command, args)


def _write_private(path: str, data: bytes) -> None:
    """Write a new file readable by its owner only; never overwrite one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CLIError(f"{path} already exists: choose another file name") from None
    except OSError as e:
        raise CLIError(f"cannot create {path}: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror}") from None


def backup(argv: list[str]) -> int:
    """
    C{minkms backup [FILE]}: save a sealed snapshot of the state (gzip
    unless C{--compress off}); only the same HSM key can restore it.
    """
    p = session.parser("backup", backup.__doc__)
    p.add_argument("file", nargs="?", metavar="FILE")
    p.add_argument("--compress", choices=("on", "off"), default="on", help="gzip the snapshot (default: on)")
    args = p.parse_args(argv)
    compress = args.compress == "on"
    path = args.file or time.strftime("%Y%m%d_%H%M%S_kms.db") + (".gzip" if compress else "")
    if os.path.exists(path):
        raise CLIError(f"{path} already exists: choose another file name")

    async def command(client, args):
        data = await client.get("/v1/db")
        if compress:
            data = gzip.compress(data)
        _write_private(path, data)
        print(f"Saved backup to {path}")

    return session.run(command, args)


def _read_backup(path: str) -> bytes:
    data = session.read_file(path)
    if data.startswith(GZIP_MAGIC):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise CLIError(f"{path}: not a valid gzip file: {e}") from None
    return data


def restore(argv: list[str]) -> int:
    """C{minkms restore HOST[:PORT] FILE}: restore a snapshot (gzip or raw) on a node."""
    p = session.parser("restore", restore.__doc__)
    p.add_argument("host", metavar="HOST[:PORT]")
    p.add_argument("file", metavar="FILE")
    args = p.parse_args(argv)
    host = _host(args.host)
    data = _read_backup(args.file)

    async def command(client, args):
        status, ctype, body = await client.request(
            b"PUT", "/v1/db", data, host=host, accept=b"application/octet-stream"
        )
        if status != 200:
            raise wire_errors.parse_error(status, ctype, body)
        print(f"Restored {args.file} on {host}")

    return session.run(command, args)


COMMANDS = {"add": add, "rm": rm, "edit": edit, "stat": stat, "ls": ls, "backup": backup, "restore": restore}
