"""
The SysAdmin's enclave commands: C{add-enclave}, C{rm-enclave},
C{ls-enclave} and C{stat-enclave}.
"""

from minkms.cli import render, session
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import ENCLAVE_CREATE, ENCLAVE_DELETE, ENCLAVE_LIST, ENCLAVE_STATUS


def add_enclave(argv: list[str]) -> int:
    """C{minkms add-enclave NAME}: create an enclave."""
    p = session.parser("add-enclave", add_enclave.__doc__)
    p.add_argument("name", metavar="NAME")
    args = p.parse_args(argv)

    async def command(client, args):
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=args.name))
        print(f"Created enclave {args.name}")

    return session.run(command, args)


rm_enclave = session.deleter(
    "rm-enclave",
    "C{minkms rm-enclave NAME...}: delete enclaves with all their keys.",
    ENCLAVE_DELETE,
    lambda name: pb.DeleteEnclaveRequest(Name=name),
    "enclave",
    enclave=False,
)


ls_enclave = session.lister(
    "ls-enclave",
    "C{minkms ls-enclave [PREFIX]}: list enclaves.",
    ENCLAVE_LIST,
    ("Created", "Name"),
    lambda e: (render.timestamp(e.CreatedAt), e.Name),
    enclave=False,
)


def stat_enclave(argv: list[str]) -> int:
    """C{minkms stat-enclave NAME...}: show when and by whom enclaves were created."""
    p = session.parser("stat-enclave", stat_enclave.__doc__, json=True)
    p.add_argument("names", nargs="+", metavar="NAME")
    args = p.parse_args(argv)

    async def command(client, args):
        replies = await client.send(ENCLAVE_STATUS, [pb.EnclaveStatusRequest(Name=n) for n in args.names])
        if args.json:
            render.print_messages(replies)
            return
        for i, e in enumerate(replies):
            if i:
                print()
            render.block(
                [("Name", e.Name), ("Created", render.timestamp(e.CreatedAt)), ("Created by", e.CreatedBy or "-")]
            )

    return session.run(command, args)


COMMANDS = {
    "add-enclave": add_enclave,
    "rm-enclave": rm_enclave,
    "ls-enclave": ls_enclave,
    "stat-enclave": stat_enclave,
}
