"""
The C{minkms} client commands, run as real processes against a real node
(L{InProcessServer}) without blocking the test's reactor.
"""

import base64
import functools
import gzip
import io
import json
import os
import re
import stat
import sys
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet import defer, utils
from twisted.trial import unittest

from minkms.apikey import APIKey, generate_api_key
from minkms.cli import cluster, keys, render, session
from minkms.cli.main import main
from minkms.cli.output import CLIError
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import ENCLAVE_CREATE, KEY_CREATE, KEY_DELETE
from tests.harness import InProcessServer, free_port
from tests.support import REPO, cli_env

ENCLAVE = "aistor-primary"
DENIED = "access denied: insufficient permissions"


def inline(test):
    """Run an C{async def} test method as trial runs Deferred-returning ones."""

    @functools.wraps(test)
    def run(self):
        return defer.ensureDeferred(test(self))

    return run


class CLIResult:
    """What one C{minkms} process printed and how it exited."""

    def __init__(self, out: bytes, err: bytes, code: int) -> None:
        self.out = out.decode("utf-8")
        self.err = err.decode("utf-8")
        self.code = code

    def json(self):
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"CLIResult(code={self.code}, out={self.out!r}, err={self.err!r})"


async def run_minkms(*args, cwd=None, **env) -> CLIResult:
    """Run C{minkms ARGS} as a user types it, with C{env} as its only KMS settings."""
    out, err, code = await utils.getProcessOutputAndValue(
        sys.executable, ["-m", "minkms.cli.main", *args], env=cli_env(**env), path=cwd or REPO
    )
    return CLIResult(out, err, code)


class CLIAssertions:
    """Checks shared by tests with and without a server."""

    def assertFails(self, result: CLIResult, message: str) -> None:
        """One line on stderr, C{minkms: error: ...MESSAGE...}, exit 1, no traceback."""
        self.assertEqual(result.code, 1, result)
        self.assertNotIn("Traceback", result.err)
        lines = result.err.splitlines()
        self.assertEqual(len(lines), 1, result)
        self.assertTrue(lines[0].startswith("minkms: error: "), result)
        self.assertIn(message, lines[0])
        self.assertEqual(result.out, "")

    def path(self, text: str | None = None) -> str:
        """A fresh absolute path (the CLI runs elsewhere), holding C{text} if given."""
        path = os.path.abspath(self.mktemp())
        if text is not None:
            with open(path, "w") as f:
                f.write(text)
        return path


class ServerTestCase(CLIAssertions, unittest.TestCase):
    """A test with its own node and helpers to run the CLI against it."""

    timeout = 180

    def setUp(self):
        self.server = InProcessServer(self)
        return defer.ensureDeferred(self.server.wait_ready())

    async def minkms(self, *args, api_key=None, cwd=None, **env) -> CLIResult:
        """Run C{minkms ARGS -k} as the SysAdmin (or C{api_key})."""
        settings = {
            "MINIO_KMS_SERVER": f"https://{self.server.host}",
            "MINIO_KMS_API_KEY": api_key if api_key is not None else self.server.api_key.text,
        }
        return await run_minkms(*args, "-k", cwd=cwd, **{**settings, **env})

    async def ok(self, *args, **kwargs) -> CLIResult:
        """Run the CLI and insist that it succeeds quietly on stderr."""
        result = await self.minkms(*args, **kwargs)
        self.assertEqual((result.code, result.err), (0, ""), result)
        return result

    async def call(self, code, message, enclave=""):
        """One command through an in-process SysAdmin client (fast set-up)."""
        client = self.server.client()
        try:
            return await client.call(code, message, enclave=enclave)
        finally:
            await client.close()

    async def new_enclave(self, name=ENCLAVE):
        """Create an enclave without a CLI round trip."""
        await self.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=name))


class GuideTests(ServerTestCase):
    """Step 6 of the cluster deployment guide, and the cluster view."""

    @inline
    async def test_enclave_and_admin_identity(self):
        created = await self.ok("add-enclave", ENCLAVE)
        self.assertEqual(created.out, f"Created enclave {ENCLAVE}\n")
        made = await self.ok("add-identity", "--enclave", ENCLAVE, "--admin")
        api_keys = re.findall(r"k1:[A-Za-z0-9_-]{43}", made.out)
        self.assertEqual(len(set(api_keys)), 1, made.out)
        notice = "This is the only time it is shown. Keep it secret and secure!"
        self.assertEqual(made.out.count(notice), 1)
        admin = APIKey.parse(api_keys[0])
        self.assertIn(admin.identity, made.out)

        added = await self.ok("add-key", "--enclave", ENCLAVE, "sse-key", api_key=admin.text)
        self.assertEqual(added.out, "Created key sse-key\n")
        listed = await self.ok("ls-key", "--enclave", ENCLAVE)
        self.assertEqual(listed.out.split()[:3], ["Type", "Created", "Name"])
        self.assertTrue(listed.out.splitlines()[1].endswith("sse-key"))
        self.assertFails(await self.minkms("add-enclave", "other", api_key=admin.text), DENIED)

        whoami = await self.ok("get-identity", "-e", ENCLAVE, api_key=admin.text)
        self.assertRegex(whoami.out, rf"Identity\s+{re.escape(admin.identity)}\n")
        self.assertRegex(whoami.out, r"Privilege\s+Admin\n")
        self.assertRegex(whoami.out, rf"Created by\s+{re.escape(self.server.api_key.identity)}\n")

    @inline
    async def test_stat_and_ls(self):
        host = self.server.host
        shown = await self.ok("stat")
        lines = shown.out.splitlines()
        self.assertEqual(lines[0], f"● Node 0 at {host}")
        self.assertRegex(shown.out, r"\n  Version\s+\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ\n")
        self.assertRegex(shown.out, r"\n  Uptime\s+\d+(ms|s|m\d*s?)\n")
        self.assertRegex(shown.out, r"\n  State\s+Leader\n")
        self.assertRegex(shown.out, r"\n  Leader\s+Node 0\n")
        self.assertRegex(shown.out, r"\n  Commit\s+\d+\n")
        self.assertEqual(lines[-1], "All [1/1] nodes are up ✔")

        as_json = (await self.ok("stat", "--json")).json()
        self.assertEqual(as_json["nodes_up"]["0"]["role"], "Leader")
        self.assertEqual(as_json["nodes_up"]["0"]["host"], host)
        self.assertEqual(as_json["nodes_down"], {})

        table = (await self.ok("ls")).out.splitlines()
        self.assertEqual(table[0].split(), ["ID", "Status", "Role", "Uptime", "Host"])
        row = table[1].split()
        self.assertEqual((row[0], row[1], row[2], row[4]), ("0", "up", "Leader", host))
        self.assertEqual((await self.ok("ls", "--json")).json()[0]["host"], host)

    @inline
    async def test_form_cluster(self):
        second = InProcessServer(self, hsm=self.server.hsm)
        await second.wait_ready()
        added = await self.ok("add", second.host)
        self.assertEqual(added.out, f"Added node {second.host} to the cluster\n")
        shown = await self.ok("stat")
        self.assertIn(f"● Node 0 at {self.server.host}\n", shown.out)
        self.assertIn(f"● Node 1 at {second.host}\n", shown.out)
        roles = re.findall(r"\n  State\s+(\w+)\n", shown.out)
        self.assertEqual(sorted(roles), ["Follower", "Leader"])
        self.assertEqual(len(set(re.findall(r"\n  Leader\s+(Node \d)\n", shown.out))), 1)
        self.assertTrue(shown.out.endswith("\nAll [2/2] nodes are up ✔\n"), shown.out)

        await second.stop()
        degraded = await self.ok("stat")
        self.assertIn(f"● Node 1 at {second.host}\n  State      Offline\n", degraded.out)
        self.assertTrue(degraded.out.endswith("\n[1/2] nodes are up\n"), degraded.out)

    @inline
    async def test_backup_and_restore(self):
        await self.new_enclave()
        await self.call(KEY_CREATE, pb.CreateKeyRequest(Name="kept"), enclave=ENCLAVE)
        directory = self.path()
        os.makedirs(directory)
        path = os.path.join(directory, "state.db.gzip")
        saved = await self.ok("backup", path)
        self.assertEqual(saved.out, f"Saved backup to {path}\n")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path, "rb") as f:
            self.assertEqual(f.read(2), b"\x1f\x8b")
        self.assertFails(await self.minkms("backup", path), "already exists")

        await self.ok("backup", cwd=directory)
        named = [n for n in os.listdir(directory) if n != "state.db.gzip"]
        self.assertEqual(len(named), 1)
        self.assertRegex(named[0], r"^\d{8}_\d{6}_kms\.db\.gzip$")

        raw = os.path.join(directory, "raw.db")
        await self.ok("backup", "--compress", "off", raw)
        with open(raw, "rb") as f, gzip.open(path) as g:
            self.assertEqual(f.read(8), g.read(8))

        await self.call(KEY_DELETE, pb.DeleteKeyRequest(Name="kept", AllVersions=True), enclave=ENCLAVE)
        for backup_file in (path, raw):
            restored = await self.minkms("restore", self.server.host, backup_file)
            expected = f"Restored {backup_file} on {self.server.host}\n"
            self.assertEqual((restored.code, restored.out), (0, expected), restored)
        listed = await self.ok("ls-key", "-e", ENCLAVE)
        self.assertIn("kept", listed.out)


class KeyTests(ServerTestCase):
    """Keys: create, rotate, inspect, use and delete."""

    @inline
    async def test_key_lifecycle(self):
        await self.new_enclave()
        e = ("-e", ENCLAVE)
        await self.ok("add-key", *e, "app", "--type", "ChaCha20")
        rotated = await self.ok("add-key", *e, "app", "--version")
        self.assertEqual(rotated.out, "Added a new version to key app\n")

        latest = await self.ok("stat-key", *e, "app")
        owner = re.escape(self.server.api_key.identity)
        self.assertRegex(
            latest.out,
            r"^Name\s+app\nVersion\s+2\nType\s+ChaCha20\n"
            rf"Created\s+\S+ \S+\nOwner\s+{owner}\n$",
        )
        first = (await self.ok("stat-key", *e, "app", "-v", "1", "--json")).json()
        self.assertEqual((first[0]["name"], first[0]["version"], first[0]["type"]), ("app", 1, "ChaCha20"))

        generated = await self.ok("keygen", *e, "app", "--context", "bucket/object")
        plaintext = re.search(r"^Plaintext\s+(\S+)$", generated.out, re.M)[1]
        ciphertext = re.search(r"^Ciphertext\s+(v2:\S+)$", generated.out, re.M)[1]
        self.assertEqual(len(base64.b64decode(plaintext)), 32)
        opened = await self.ok("decrypt", *e, "app", ciphertext, "--context", "bucket/object")
        self.assertEqual(opened.out, plaintext + "\n")
        self.assertFails(await self.minkms("decrypt", *e, "app", ciphertext), "invalid ciphertext")
        as_json = (await self.ok("keygen", *e, "app", "--length", "16", "--json")).json()
        self.assertEqual((as_json["version"], len(base64.b64decode(as_json["plaintext"]))), (2, 16))

        sealed = (await self.ok("encrypt", *e, "app", "hello world")).out.strip()
        self.assertRegex(sealed, r"^v2:[A-Za-z0-9+/=]+$")
        self.assertEqual((await self.ok("decrypt", *e, "app", sealed)).out, "hello world\n")
        bare = sealed.split(":", 1)[1]
        self.assertEqual((await self.ok("decrypt", *e, "app", bare)).out, "hello world\n")
        old = (await self.ok("encrypt", *e, "app", "-v", "1", "old")).out.strip()
        self.assertTrue(old.startswith("v1:"))
        self.assertRegex((await self.ok("mac", *e, "app", "data")).out, r"^v2:[A-Za-z0-9+/=]+\n$")

        removed = await self.ok("rm-key", *e, "app")
        self.assertEqual(removed.out, "Deleted the latest version of key app\n")
        self.assertRegex((await self.ok("stat-key", *e, "app")).out, r"Version\s+1\n")
        self.assertEqual((await self.ok("decrypt", *e, "app", old)).out, "old\n")
        self.assertFails(await self.minkms("decrypt", *e, "app", sealed), "key does not exist")

        material = base64.b64encode(os.urandom(32)).decode()
        self.assertEqual(
            (await self.ok("add-key", *e, "imported", "--import", material)).out, "Imported key imported\n"
        )
        removed = await self.ok("rm-key", *e, "imported", "--all")
        self.assertEqual(removed.out, "Deleted key imported\n")
        self.assertFails(await self.minkms("stat-key", *e, "imported"), "key does not exist")

    @inline
    async def test_listing_follows_pages(self):
        await self.new_enclave()
        names = [f"key-{i}" for i in range(7)]
        for name in names:
            await self.call(KEY_CREATE, pb.CreateKeyRequest(Name=name), enclave=ENCLAVE)
        await self.call(KEY_CREATE, pb.CreateKeyRequest(Name="other"), enclave=ENCLAVE)
        client = self.server.client()
        try:
            paged = await session.list_all(client, 208, "key-", enclave=ENCLAVE, limit=2)
        finally:
            await client.close()
        self.assertEqual([k.Name for k in paged], names)

        listed = await self.ok("ls-key", "-e", ENCLAVE)
        shown = [line.split()[-1] for line in listed.out.splitlines()[1:]]
        self.assertEqual(shown, sorted(names + ["other"]))
        prefixed = (await self.ok("ls-key", "-e", ENCLAVE, "key-", "--json")).json()
        self.assertEqual([k["name"] for k in prefixed], names)
        enclaves = (await self.ok("ls-enclave", "--json")).json()
        self.assertEqual([x["name"] for x in enclaves], [ENCLAVE])
        described = await self.ok("stat-enclave", ENCLAVE)
        self.assertRegex(described.out, rf"^Name\s+{ENCLAVE}\nCreated\s+\S+ \S+\nCreated by\s+h1:")


class AccessTests(ServerTestCase):
    """Policies and identities, and what they allow."""

    @inline
    async def test_policies(self):
        await self.new_enclave()
        e = ("-e", ENCLAVE)
        for name in ("app-1", "app-2", "app-secret", "db"):
            await self.call(KEY_CREATE, pb.CreateKeyRequest(Name=name), enclave=ENCLAVE)
        path = self.path()
        with open(path, "w") as f:
            json.dump(
                {
                    "allow": {
                        "KEY:ENCRYPT": "app-*",
                        "key:decrypt": ["app-1", "app-secret", ""],
                        "KEY:STATUS": {"app-*": {}, "db": {}},
                    },
                    "deny": {"KEY:ENCRYPT": ["app-secret"]},
                },
                f,
            )
        self.assertEqual((await self.ok("add-policy", *e, "apps", path)).out, "Added policy apps\n")
        document = (await self.ok("get-policy", *e, "apps")).json()
        self.assertEqual(
            document,
            {
                "allow": {
                    "KEY:DECRYPT": ["app-1", "app-secret"],
                    "KEY:ENCRYPT": "app-*",
                    "KEY:STATUS": ["db", "app-*"],
                },
                "deny": {"KEY:ENCRYPT": "app-secret"},
            },
        )
        proto = (await self.ok("get-policy", *e, "apps", "--json")).json()
        self.assertEqual(proto[0]["allow"]["KEY:ENCRYPT"], {"rules": {"app-*": {}}})
        described = await self.ok("stat-policy", *e, "apps")
        self.assertRegex(described.out, r"^Name\s+apps\nCreated\s+\S+ \S+\nCreated by\s+h1:")
        listed = (await self.ok("ls-policy", *e, "--json")).json()
        self.assertEqual([p["name"] for p in listed], ["apps"])

        user = (await self.ok("add-identity", *e, "--json")).json()
        self.assertTrue(user["api_key"].startswith("k1:"))
        assigned = await self.ok("set-policy", *e, "apps", user["identity"])
        self.assertEqual(assigned.out, f"Assigned policy apps to {user['identity']}\n")
        who = await self.ok("get-identity", *e, api_key=user["api_key"])
        self.assertRegex(who.out, r"Privilege\s+User\nPolicy\s+apps\n")

        as_user = {"api_key": user["api_key"]}
        sealed = (await self.ok("encrypt", *e, "app-1", "secret", **as_user)).out.strip()
        self.assertEqual((await self.ok("decrypt", *e, "app-1", sealed, **as_user)).out, "secret\n")
        self.assertFails(await self.minkms("encrypt", *e, "app-secret", "x", **as_user), DENIED)
        self.assertFails(await self.minkms("encrypt", *e, "db", "x", **as_user), DENIED)
        self.assertFails(await self.minkms("add-key", *e, "app-3", **as_user), DENIED)
        await self.ok("stat-key", *e, "db", **as_user)

        self.assertEqual((await self.ok("rm-policy", *e, "apps")).out, "Deleted policy apps\n")
        self.assertFails(await self.minkms("encrypt", *e, "app-1", "x", **as_user), DENIED)
        self.assertFails(await self.minkms("get-policy", *e, "apps"), "policy does not exist")

    @inline
    async def test_identities(self):
        await self.new_enclave()
        e = ("-e", ENCLAVE)
        root = self.server.api_key.identity
        me = await self.ok("get-identity", *e)
        self.assertRegex(me.out, rf"^Identity\s+{re.escape(root)}\nPrivilege\s+SysAdmin\n")

        other = APIKey.parse(generate_api_key())
        made = await self.ok("add-identity", *e, other.identity, "--tag", "team=storage")
        self.assertEqual(made.out, f"Added identity {other.identity} (User) to enclave {ENCLAVE}\n")
        shown = await self.ok("get-identity", *e, other.identity)
        self.assertRegex(shown.out, r"Privilege\s+User\n")
        self.assertRegex(shown.out, r"Tags\s+team=storage\n")
        self.assertRegex(shown.out, r"Service account\s+no\n")
        as_json = (await self.ok("get-identity", *e, other.identity, "--json")).json()
        self.assertEqual((as_json[0]["privilege"], as_json[0]["tags"]), (3, {"team": "storage"}))
        listed = await self.ok("ls-identity", *e)
        self.assertEqual(listed.out.split()[:4], ["Privilege", "Policy", "Created", "Identity"])
        self.assertIn(other.identity, listed.out)

        self.assertEqual((await self.ok("rm-identity", *e, other.identity)).out, f"Deleted identity {other.identity}\n")
        gone = await self.minkms("get-identity", *e, other.identity)
        self.assertFails(gone, "identity does not exist")
        self.assertFails(await self.minkms("get-identity", *e, api_key=other.text), DENIED)


class BadInputTests(ServerTestCase):
    """Every mistake is one line on stderr and a non-zero exit."""

    @inline
    async def test_mistakes_seen_by_the_server(self):
        await self.new_enclave()
        e = ("-e", ENCLAVE)
        port = free_port()
        cases = [
            (self.minkms("stat", api_key=""), "no API key"),
            (self.minkms("stat", api_key=generate_api_key()), DENIED),
            (self.minkms("stat", api_key="k1:nonsense"), "invalid API key"),
            (
                self.minkms("stat", MINIO_KMS_SERVER=f"https://127.0.0.1:{port}"),
                f"cannot reach https://127.0.0.1:{port}: connection refused",
            ),
            (self.minkms("stat-key", *e, "missing"), "key does not exist"),
            (self.minkms("decrypt", *e, "k", "v1:not*base64"), "invalid ciphertext: not base64"),
            (self.minkms("add-policy", *e, "p", self.path('{"allow": ')), "invalid policy: not valid JSON"),
            (self.minkms("add-enclave", ENCLAVE), "enclave already exists"),
        ]
        results = await defer.gatherResults([defer.ensureDeferred(c) for c, _ in cases])
        for result, (_, message) in zip(results, cases):
            self.assertFails(result, message)


class OfflineMistakeTests(CLIAssertions, unittest.TestCase):
    """Mistakes the CLI catches before it connects, run in this process."""

    def test_mistakes(self):
        self.patch(os, "environ", cli_env(MINIO_KMS_SERVER="https://127.0.0.1:1"))
        e = ("-e", ENCLAVE)
        missing = self.path()
        cases = [
            (("add-key", *e, "x", "--import", "%%%"), "invalid key material: not base64"),
            (("add-key", *e, "x", "--type", "DES"), "invalid key type 'DES'"),
            (("add-key", *e, "x", "--import", "AAAA", "--version"), "cannot be combined"),
            (("add-policy", *e, "p", self.path('{"allow": {"KEY:FROB": "*"}}')), "unknown action 'KEY:FROB'"),
            (("add-policy", *e, "p", self.path('{"allow": {"ENCLAVE:CREATE": "*"}}')), "cannot be granted by a policy"),
            (("add-policy", *e, "p", missing), "cannot read"),
            (("ls-key",), "no enclave"),
            (("stat-key", *e), "the following arguments are required"),
            (("rm-key", *e, "k", "--all", "-v", "1"), "cannot be combined"),
            (("add-identity", *e, "--tag", "novalue"), "invalid tag"),
            (("decrypt", *e, "k", "v1:"), "invalid ciphertext"),
            (("edit", "127.0.0.1", "--rm", "x"), "invalid node ID"),
            (("restore", "127.0.0.1", missing), "cannot read"),
        ]
        for argv, message in cases:
            err = io.StringIO()
            with redirect_stderr(err), redirect_stdout(io.StringIO()) as out:
                code = main(list(argv))
            self.assertFails(CLIResult(out.getvalue().encode(), err.getvalue().encode(), code), message)


class RenderTests(unittest.TestCase):
    """The pure pieces: durations, ciphertext text, the cluster view."""

    def test_durations(self):
        cases = {
            0.233: "233ms",
            31: "31s",
            300: "5m",
            1471: "24m31s",
            3720: "1h2m",
            3725: "1h2m",
            7200: "2h",
            90000: "1d1h",
        }
        for seconds, text in cases.items():
            self.assertEqual(render.duration(seconds), text)

    def test_ciphertexts(self):
        self.assertEqual(keys.parse_ciphertext("v3:AQID"), (3, b"\x01\x02\x03"))
        self.assertEqual(keys.parse_ciphertext("AQID"), (0, b"\x01\x02\x03"))
        self.assertEqual(keys.format_ciphertext(3, b"\x01\x02\x03"), "v3:AQID")
        for bad in ("v1:@@", "", "v2:"):
            self.assertRaises(CLIError, keys.parse_ciphertext, bad)

    def test_node_down(self):
        status = pb.ClusterStatusResponse()
        for node_id in (0, 1):
            up = status.NodesUp[node_id]
            up.Host, up.Version, up.Role = f"node{node_id}:7373", "2025-11-12T19-14-51Z", "Follower"
            up.LeaderID, up.Commit = 1, 12
            up.UpTime.FromSeconds(1471)
        status.NodesUp[1].Role = "Leader"
        status.NodesDown[2] = "node2:7373"
        out = io.StringIO()
        with redirect_stdout(out):
            cluster.print_status(status)
        self.assertEqual(
            out.getvalue(),
            (
                "● Node 0 at node0:7373\n"
                "  Version    2025-11-12T19-14-51Z\n"
                "  Uptime     24m31s\n"
                "  State      Follower\n"
                "  Leader     Node 1\n"
                "  Commit     12\n"
                "\n"
                "● Node 1 at node1:7373\n"
                "  Version    2025-11-12T19-14-51Z\n"
                "  Uptime     24m31s\n"
                "  State      Leader\n"
                "  Leader     Node 1\n"
                "  Commit     12\n"
                "\n"
                "● Node 2 at node2:7373\n"
                "  State      Offline\n"
                "\n"
                "[2/3] nodes are up\n"
            ),
        )


class TLSMessageTests(CLIAssertions, unittest.TestCase):
    """
    TLS failures in words that name the fix, against a real node whose
    certificate is for C{localhost, 10.0.0.1} (not for 127.0.0.1).
    """

    timeout = 120

    def setUp(self):
        from tests.support import write_server_certificate

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key, self.cert = write_server_certificate(directory, names=("localhost",), ips=("10.0.0.1",))
        config = os.path.join(directory, "config.yaml")
        with open(config, "w") as f:
            f.write(f"version: v1\ntls:\n  certs:\n  - key: {key}\n    cert: {self.cert}\n")
        self.server = InProcessServer(self, extra_args=["--config", config])
        self.settings = {"MINIO_KMS_API_KEY": self.server.api_key.text}
        return defer.ensureDeferred(self.server.wait_ready())

    def at(self, name: str) -> dict:
        return {**self.settings, "MINIO_KMS_SERVER": f"https://{name}:{self.server.port}"}

    @inline
    async def test_messages(self):
        untrusted, mismatch, trusted, from_env = await defer.gatherResults(
            [
                defer.ensureDeferred(run_minkms("stat", **self.at("localhost"))),
                defer.ensureDeferred(run_minkms("stat", "--cacert", self.cert, **self.at("127.0.0.1"))),
                defer.ensureDeferred(run_minkms("stat", "--cacert", self.cert, **self.at("localhost"))),
                defer.ensureDeferred(run_minkms("stat", SSL_CERT_FILE=self.cert, **self.at("localhost"))),
            ]
        )
        self.assertFails(
            untrusted, "certificate is not signed by a trusted CA: pass --cacert FILE, set SSL_CERT_FILE, or use -k"
        )
        self.assertFails(mismatch, "certificate of 127.0.0.1 is for localhost, 10.0.0.1")
        for result in (trusted, from_env):
            self.assertEqual((result.code, result.err), (0, ""), result)
            self.assertIn("All [1/1] nodes are up", result.out)

    @inline
    async def test_ca_directory_with_other_files(self):
        """openssl's ca.srl beside the CA certificate is skipped with a warning."""
        import shutil

        cas = os.path.abspath(self.mktemp())
        os.makedirs(cas)
        shutil.copy(self.cert, os.path.join(cas, "ca.crt"))
        with open(os.path.join(cas, "ca.srl"), "w") as f:
            f.write("1A2B3C\n")
        result = await run_minkms("stat", "--cacert", cas, **self.at("localhost"))
        self.assertEqual(result.code, 0, result)
        self.assertEqual(
            result.err, f"minkms: warning: skipped {cas}/ca.srl in CA directory {cas}: not a PEM certificate\n"
        )
        os.remove(os.path.join(cas, "ca.crt"))
        result = await run_minkms("stat", "--cacert", cas, **self.at("localhost"))
        self.assertFails(result, f"no CA certificate found in {cas}")


class ClientSettingsTests(CLIAssertions, unittest.TestCase):
    """What the CLI says about its settings and its own usage, as a user runs it."""

    timeout = 120

    @inline
    async def test_messages(self):
        key = generate_api_key()
        cases = [
            (
                run_minkms("stat", MINIO_KMS_SERVER="http://127.0.0.1:7373", MINIO_KMS_API_KEY=key),
                "http://127.0.0.1:7373: minkms serves HTTPS only: use https://127.0.0.1:7373",
            ),
            (
                run_minkms("stat", MINIO_KMS_SERVER="", MINIO_KMS_API_KEY=key),
                "MINIO_KMS_SERVER is empty: set it to the server's URL, e.g. https://localhost:7373",
            ),
            (
                run_minkms("stat", MINIO_KMS_SERVER="https://no-such-node.invalid:7373", MINIO_KMS_API_KEY=key),
                "cannot reach https://no-such-node.invalid:7373: no such host",
            ),
            (run_minkms("stats"), "unknown command 'stats'; did you mean 'stat'?"),
        ]
        results = await defer.gatherResults([defer.ensureDeferred(c) for c, _ in cases])
        for result, (_, message) in zip(results, cases):
            self.assertFails(result, message)

    @inline
    async def test_server_usage_and_version(self):
        usage_text, version_text, policy_help = await defer.gatherResults(
            [
                defer.ensureDeferred(run_minkms("server", "--help")),
                defer.ensureDeferred(run_minkms("server", "--version")),
                defer.ensureDeferred(run_minkms("add-policy", "--help")),
            ]
        )
        self.assertEqual(usage_text.code, 0, usage_text)
        self.assertTrue(usage_text.out.startswith("Usage: minkms server VOLUME [options]\n"), usage_text)
        self.assertEqual(version_text.code, 0, version_text)
        self.assertRegex(version_text.out, r"^minkms version \S+ \(commit=\w+\)\n$")
        self.assertIn("docs/policies.md", policy_help.out)
        self.assertTrue(os.path.exists(os.path.join(REPO, "docs", "policies.md")))

    @inline
    async def test_quiet_on_broken_pipe(self):
        """C{minkms stat --json | head}: the reader leaves early; nothing on stderr."""
        server = InProcessServer(self)
        await server.wait_ready()
        environ = cli_env(MINIO_KMS_SERVER=f"https://{server.host}", MINIO_KMS_API_KEY=server.api_key.text)
        command = f"{sys.executable} -m minkms.cli.main stat --json -k | true"
        out, err, code = await utils.getProcessOutputAndValue("/bin/sh", ["-c", command], env=environ, path=REPO)
        self.assertEqual(err, b"")
