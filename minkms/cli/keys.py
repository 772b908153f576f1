"""
The key commands of an enclave: C{add-key}, C{ls-key}, C{stat-key},
C{rm-key}, and the cryptographic ones C{keygen}, C{encrypt}, C{decrypt}
and C{mac}.  Ciphertexts are shown as C{v<VERSION>:<BASE64>}.
"""

import base64
import binascii
import re

from minkms.cli import render, session
from minkms.cli.output import CLIError
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import (
    KEY_CREATE,
    KEY_DECRYPT,
    KEY_DELETE,
    KEY_ENCRYPT,
    KEY_GENERATE,
    KEY_IMPORT,
    KEY_LIST,
    KEY_MAC,
    KEY_STATUS,
)

KEY_TYPES = {"aes256": "AES256", "chacha20": "ChaCha20"}
_VERSIONED = re.compile(r"v(\d+):(.*)", re.DOTALL)


def _key_type(text: str) -> str:
    try:
        return KEY_TYPES[text.lower()]
    except KeyError:
        raise CLIError(f"invalid key type '{text}': expected AES256 or ChaCha20") from None


def _base64(text: str, what: str, hint: str = "") -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CLIError(f"invalid {what}: not base64{hint}") from None


def format_ciphertext(version: int, ciphertext: bytes) -> str:
    """A ciphertext as the CLI shows it: C{v<VERSION>:<BASE64>}."""
    return f"v{version}:{base64.b64encode(ciphertext).decode('ascii')}"


def parse_ciphertext(text: str) -> tuple[int, bytes]:
    """
    C{(version, ciphertext)} from C{v<VERSION>:<BASE64>} or bare base64
    (version 0: the server reads it from the ciphertext).
    """
    version = 0
    match = _VERSIONED.fullmatch(text.strip())
    if match:
        version, text = int(match[1]), match[2]
    data = _base64(text, "ciphertext", " (expected v<VERSION>:<BASE64>)")
    if not data:
        raise CLIError("invalid ciphertext: empty")
    return version, data


def _readable(data: bytes) -> str | None:
    """C{data} as text if it is UTF-8 a terminal can show, else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c in "\t\n\r" for c in text):
        return text
    return None


def add_key(argv: list[str]) -> int:
    """
    C{minkms add-key NAME}: create a key, add a version to it
    (C{--version}, a rotation), or import key material (C{--import}).
    """
    p = session.parser("add-key", add_key.__doc__, enclave=True)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--type", metavar="AES256|ChaCha20", help="key type (default: chosen by the server)")
    p.add_argument("--version", action="store_true", help="add a new version to an existing key")
    p.add_argument("--import", dest="material", metavar="B64KEY", help="import base64 key material")
    args = p.parse_args(argv)
    key_type = _key_type(args.type) if args.type else ""
    if args.material is not None and args.version:
        raise CLIError("--import and --version cannot be combined")
    material = _base64(args.material, "key material") if args.material is not None else None
    enclave = session.enclave_of(args)

    async def command(client, args):
        if material is not None:
            request = pb.ImportKeyRequest(Name=args.name, Type=key_type, Key=material)
            await client.call(KEY_IMPORT, request, enclave=enclave)
            print(f"Imported key {args.name}")
            return
        request = pb.CreateKeyRequest(Name=args.name, Type=key_type, AddVersion=args.version)
        await client.call(KEY_CREATE, request, enclave=enclave)
        if args.version:
            print(f"Added a new version to key {args.name}")
        else:
            print(f"Created key {args.name}")

    return session.run(command, args)


ls_key = session.lister(
    "ls-key",
    "C{minkms ls-key [PREFIX]}: list the keys of an enclave.",
    KEY_LIST,
    ("Type", "Created", "Name"),
    lambda k: (k.Type, render.timestamp(k.CreatedAt), k.Name),
)


def stat_key(argv: list[str]) -> int:
    """C{minkms stat-key NAME...}: show the version, type, creation time and owner of keys."""
    p = session.parser("stat-key", stat_key.__doc__, enclave=True, json=True)
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-v", "--version", type=int, default=0, metavar="VER", help="key version (default: latest)")
    args = p.parse_args(argv)
    enclave = session.enclave_of(args)

    async def command(client, args):
        requests = [pb.KeyStatusRequest(Name=n, Version=args.version) for n in args.names]
        replies = await client.send(KEY_STATUS, requests, enclave=enclave)
        if args.json:
            render.print_messages(replies)
            return
        for i, k in enumerate(replies):
            if i:
                print()
            render.block(
                [
                    ("Name", k.Name),
                    ("Version", str(k.Version)),
                    ("Type", k.Type),
                    ("Created", render.timestamp(k.CreatedAt)),
                    ("Owner", k.CreatedBy or "-"),
                ]
            )

    return session.run(command, args)


def rm_key(argv: list[str]) -> int:
    """
    C{minkms rm-key NAME}: delete the latest version of a key, one version
    (C{-v}) or the whole key (C{--all}).  Irreversible but from a backup.
    """
    p = session.parser("rm-key", rm_key.__doc__, enclave=True)
    p.add_argument("name", metavar="NAME")
    p.add_argument("-v", "--version", type=int, default=0, metavar="VER", help="version to delete")
    p.add_argument("--all", action="store_true", help="delete every version")
    args = p.parse_args(argv)
    if args.all and args.version:
        raise CLIError("--all and --version cannot be combined")
    enclave = session.enclave_of(args)

    async def command(client, args):
        request = pb.DeleteKeyRequest(Name=args.name, Version=args.version, AllVersions=args.all)
        await client.call(KEY_DELETE, request, enclave=enclave)
        if args.all:
            print(f"Deleted key {args.name}")
        elif args.version:
            print(f"Deleted version {args.version} of key {args.name}")
        else:
            print(f"Deleted the latest version of key {args.name}")

    return session.run(command, args)


def _crypto_parser(name: str, doc: str, data: str | None):
    p = session.parser(name, doc, enclave=True, json=True)
    p.add_argument("name", metavar="NAME")
    if data:
        p.add_argument("data", metavar=data)
    p.add_argument("-v", "--version", type=int, default=0, metavar="VER", help="key version (default: latest)")
    return p


def keygen(argv: list[str]) -> int:
    """
    C{minkms keygen NAME}: generate a data encryption key; prints its
    plaintext and its ciphertext under the key.
    """
    p = _crypto_parser("keygen", keygen.__doc__, None)
    p.add_argument("--length", type=int, default=0, metavar="BYTES", help="key length (default: 32)")
    p.add_argument("--context", default="", metavar="TEXT", help="associated data bound to the ciphertext")
    args = p.parse_args(argv)
    enclave = session.enclave_of(args)

    async def command(client, args):
        request = pb.GenerateKeyRequest(
            Name=args.name, Version=args.version, Length=args.length, AssociatedData=args.context.encode("utf-8")
        )
        reply = await client.call(KEY_GENERATE, request, enclave=enclave)
        if args.json:
            render.print_message(reply)
            return
        render.block(
            [
                ("Plaintext", base64.b64encode(reply.Plaintext).decode("ascii")),
                ("Ciphertext", format_ciphertext(reply.Version, reply.Ciphertext)),
            ]
        )

    return session.run(command, args)


def encrypt(argv: list[str]) -> int:
    """C{minkms encrypt NAME DATA}: encrypt text; prints C{v<VERSION>:<BASE64>}."""
    p = _crypto_parser("encrypt", encrypt.__doc__, "DATA")
    p.add_argument("--context", default="", metavar="TEXT", help="associated data")
    args = p.parse_args(argv)
    enclave = session.enclave_of(args)

    async def command(client, args):
        request = pb.EncryptRequest(
            Name=args.name,
            Version=args.version,
            Plaintext=args.data.encode("utf-8"),
            AssociatedData=args.context.encode("utf-8"),
        )
        reply = await client.call(KEY_ENCRYPT, request, enclave=enclave)
        if args.json:
            render.print_message(reply)
        else:
            print(format_ciphertext(reply.Version, reply.Ciphertext))

    return session.run(command, args)


def decrypt(argv: list[str]) -> int:
    """
    C{minkms decrypt NAME DATA}: decrypt C{v<VERSION>:<BASE64>} (or bare
    base64); prints the plaintext as text if it is UTF-8, else as base64.
    """
    p = session.parser("decrypt", decrypt.__doc__, enclave=True, json=True)
    p.add_argument("name", metavar="NAME")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--context", default="", metavar="TEXT", help="associated data used to encrypt")
    args = p.parse_args(argv)
    version, ciphertext = parse_ciphertext(args.data)
    enclave = session.enclave_of(args)

    async def command(client, args):
        request = pb.DecryptRequest(
            Name=args.name, Version=version, Ciphertext=ciphertext, AssociatedData=args.context.encode("utf-8")
        )
        reply = await client.call(KEY_DECRYPT, request, enclave=enclave)
        if args.json:
            render.print_message(reply)
            return
        text = _readable(reply.Plaintext)
        print(text if text is not None else base64.b64encode(reply.Plaintext).decode("ascii"))

    return session.run(command, args)


def mac(argv: list[str]) -> int:
    """C{minkms mac NAME DATA}: the MAC of text under a key, as C{v<VERSION>:<BASE64>}."""
    p = _crypto_parser("mac", mac.__doc__, "DATA")
    args = p.parse_args(argv)
    enclave = session.enclave_of(args)

    async def command(client, args):
        message = args.data.encode("utf-8")
        request = pb.MACRequest(Name=args.name, Version=args.version, Message=message)
        reply = await client.call(KEY_MAC, request, enclave=enclave)
        if args.json:
            render.print_message(reply)
        else:
            print(format_ciphertext(reply.Version, reply.MAC))

    return session.run(command, args)


COMMANDS = {
    "add-key": add_key,
    "ls-key": ls_key,
    "stat-key": stat_key,
    "rm-key": rm_key,
    "keygen": keygen,
    "encrypt": encrypt,
    "decrypt": decrypt,
    "mac": mac,
}
