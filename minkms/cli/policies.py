"""
The policy commands of an enclave: C{add-policy}, C{get-policy},
C{stat-policy}, C{set-policy}, C{ls-policy} and C{rm-policy}.  Policy
files are the JSON documents of spec section 8, checked here before
anything is sent.
"""

from minkms.cli import render, session
from minkms.cli.output import CLIError
from minkms.errors import KMSError
from minkms.state.policy import (
    policy_from_json,
    policy_to_json,
    raw_rules_from_proto,
    rules_to_proto,
)
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import (
    POLICY_ASSIGN,
    POLICY_CREATE,
    POLICY_DELETE,
    POLICY_GET,
    POLICY_LIST,
    POLICY_STATUS,
)


def read_policy_file(name: str, path: str) -> pb.CreatePolicyRequest:
    """The request creating policy C{name} from a JSON policy file, validated."""
    text = session.read_file(path)
    try:
        allow, deny = policy_from_json(text)
    except KMSError as e:
        raise CLIError(f"{path}: {e.message}") from None
    request = pb.CreatePolicyRequest(Name=name)
    rules_to_proto(allow, request.Allow)
    rules_to_proto(deny, request.Deny)
    return request


def policy_document(reply) -> str:
    """A C{PolicyResponse} as the JSON policy document kms-go writes."""
    return policy_to_json(raw_rules_from_proto(reply.Allow), raw_rules_from_proto(reply.Deny))


POLICY_FORMAT = (
    'FILE is a JSON policy: {"allow": {"KEY:ENCRYPT": "app-*"}, "deny": {...}}; '
    "the format and an example are in docs/policies.md"
)


def add_policy(argv: list[str]) -> int:
    """C{minkms add-policy NAME FILE}: create or overwrite a policy from a JSON file."""
    p = session.parser("add-policy", add_policy.__doc__, enclave=True)
    p.epilog = POLICY_FORMAT
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE", help="the policy, as JSON (see docs/policies.md)")
    args = p.parse_args(argv)
    request = read_policy_file(args.name, args.file)
    enclave = session.enclave_of(args)

    async def command(client, args):
        await client.call(POLICY_CREATE, request, enclave=enclave)
        print(f"Added policy {args.name}")

    return session.run(command, args)


def get_policy(argv: list[str]) -> int:
    """C{minkms get-policy NAME...}: print policies as JSON documents."""
    p = session.parser("get-policy", get_policy.__doc__, enclave=True, json=True)
    p.add_argument("names", nargs="+", metavar="NAME")
    args = p.parse_args(argv)
    enclave = session.enclave_of(args)

    async def command(client, args):
        requests = [pb.PolicyRequest(Name=n) for n in args.names]
        replies = await client.send(POLICY_GET, requests, enclave=enclave)
        if args.json:
            render.print_messages(replies)
            return
        for i, reply in enumerate(replies):
            if i:
                print()
            if len(replies) > 1:
                print(f"Policy {reply.Name}:")
            print(policy_document(reply))

    return session.run(command, args)


def stat_policy(argv: list[str]) -> int:
    """C{minkms stat-policy NAME...}: show when and by whom policies were created."""
    p = session.parser("stat-policy", stat_policy.__doc__, enclave=True, json=True)
    p.add_argument("names", nargs="+", metavar="NAME")
    args = p.parse_args(argv)
    enclave = session.enclave_of(args)

    async def command(client, args):
        replies = await client.send(POLICY_STATUS, [pb.PolicyRequest(Name=n) for n in args.names], enclave=enclave)
        if args.json:
            render.print_messages(replies)
            return
        for i, reply in enumerate(replies):
            if i:
                print()
            render.block(
                [
                    ("Name", reply.Name),
                    ("Created", render.timestamp(reply.CreatedAt)),
                    ("Created by", reply.CreatedBy or "-"),
                ]
            )

    return session.run(command, args)


def set_policy(argv: list[str]) -> int:
    """C{minkms set-policy POLICY IDENTITY}: assign a policy to a User identity."""
    p = session.parser("set-policy", set_policy.__doc__, enclave=True)
    p.add_argument("policy", metavar="POLICY")
    p.add_argument("identity", metavar="IDENTITY")
    args = p.parse_args(argv)
    enclave = session.enclave_of(args)

    async def command(client, args):
        request = pb.AssignPolicyRequest(Identity=args.identity, Policy=args.policy)
        await client.call(POLICY_ASSIGN, request, enclave=enclave)
        print(f"Assigned policy {args.policy} to {args.identity}")

    return session.run(command, args)


ls_policy = session.lister(
    "ls-policy",
    "C{minkms ls-policy [PREFIX]}: list the policies of an enclave.",
    POLICY_LIST,
    ("Created", "Name"),
    lambda x: (render.timestamp(x.CreatedAt), x.Name),
)


rm_policy = session.deleter(
    "rm-policy",
    "C{minkms rm-policy NAME...}: delete policies; their identities lose those rights.",
    POLICY_DELETE,
    lambda name: pb.DeletePolicyRequest(Name=name),
    "policy",
)


COMMANDS = {
    "add-policy": add_policy,
    "get-policy": get_policy,
    "stat-policy": stat_policy,
    "set-policy": set_policy,
    "ls-policy": ls_policy,
    "rm-policy": rm_policy,
}
