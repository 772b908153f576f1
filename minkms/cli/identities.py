"""
The identity commands of an enclave: C{add-identity}, C{get-identity},
C{ls-identity} and C{rm-identity}.
"""

from minkms.apikey import APIKey, generate_api_key
from minkms.cli import render, session
from minkms.cli.local import show_new_key
from minkms.cli.output import CLIError, print_json
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import IDENTITY_CREATE, IDENTITY_DELETE, IDENTITY_LIST, IDENTITY_STATUS

PRIVILEGES = {1: "SysAdmin", 2: "Admin", 3: "User"}


def privilege_name(number: int) -> str:
    """The name of a privilege number of C{IdentityResponse}."""
    return PRIVILEGES.get(number, f"unknown ({number})")


def _tags(values: list[str]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise CLIError(f"invalid tag '{value}': expected KEY=VALUE")
        tags[key] = text
    return tags


def add_identity(argv: list[str]) -> int:
    """
    C{minkms add-identity [IDENTITY...]}: register identities in an
    enclave.  Without one, a new API key is made here, its identity
    registered, and the key printed once.
    """
    p = session.parser("add-identity", add_identity.__doc__, enclave=True, json=True)
    p.add_argument("identities", nargs="*", metavar="IDENTITY")
    p.add_argument("--admin", action="store_true", help="an enclave admin (default: a User)")
    p.add_argument("--service", action="store_true", help="a service account of the caller")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag (repeatable)")
    args = p.parse_args(argv)
    tags = _tags(args.tag)
    enclave = session.enclave_of(args)
    new_key = None if args.identities else generate_api_key()
    identities = args.identities or [APIKey.parse(new_key).identity]
    privilege = "Admin" if args.admin else "User"

    async def command(client, args):
        for identity in identities:
            request = pb.CreateIdentityRequest(
                Identity=identity, Privilege=privilege, IsServiceAccount=args.service, Tags=tags
            )
            await client.call(IDENTITY_CREATE, request, enclave=enclave)
        if new_key is not None:
            show_new_key(new_key, identities[0], args.json)
        elif args.json:
            print_json([{"identity": i, "privilege": privilege} for i in identities])
        else:
            for identity in identities:
                print(f"Added identity {identity} ({privilege}) to enclave {enclave}")

    return session.run(command, args)


def _show_identity(i) -> None:
    render.block(
        [
            ("Identity", i.Identity),
            ("Privilege", privilege_name(i.Privilege)),
            ("Policy", i.Policy or "-"),
            ("Created", render.timestamp(i.CreatedAt)),
            ("Created by", i.CreatedBy or "-"),
            ("Service account", "yes" if i.IsServiceAccount else "no"),
            ("Service accounts", ", ".join(i.ServiceAccounts) if i.ServiceAccounts else None),
            ("Tags", ", ".join(f"{k}={v}" for k, v in sorted(i.Tags.items())) or "-"),
        ]
    )


def get_identity(argv: list[str]) -> int:
    """
    C{minkms get-identity [IDENTITY...]}: show identities; without one,
    the caller itself ("who am I").
    """
    p = session.parser("get-identity", get_identity.__doc__, enclave=True, json=True)
    p.add_argument("identities", nargs="*", metavar="IDENTITY")
    args = p.parse_args(argv)
    enclave = session.enclave_of(args)
    wanted = args.identities or [""]

    async def command(client, args):
        replies = await client.send(IDENTITY_STATUS, [pb.IdentityRequest(Identity=i) for i in wanted], enclave=enclave)
        if args.json:
            render.print_messages(replies)
            return
        for n, reply in enumerate(replies):
            if n:
                print()
            _show_identity(reply)

    return session.run(command, args)


ls_identity = session.lister(
    "ls-identity",
    "C{minkms ls-identity [PREFIX]}: list the identities of an enclave.",
    IDENTITY_LIST,
    ("Privilege", "Policy", "Created", "Identity"),
    lambda i: (privilege_name(i.Privilege), i.Policy or "-", render.timestamp(i.CreatedAt), i.Identity),
)


rm_identity = session.deleter(
    "rm-identity",
    "C{minkms rm-identity IDENTITY...}: delete identities and their service accounts.",
    IDENTITY_DELETE,
    lambda identity: pb.DeleteIdentityRequest(Identity=identity),
    "identity",
    metavar="IDENTITY",
)


COMMANDS = {
    "add-identity": add_identity,
    "get-identity": get_identity,
    "ls-identity": ls_identity,
    "rm-identity": rm_identity,
}
