"""
Read-your-writes on every node (issue 8), on a cluster of real processes.

Three C{minkms server} processes on loopback.  Clients send every request
to a node of the three picked at random for that request, as kms-go does.
Each sequence makes a write and then reads what the write changed, every
step on its own random node.  An answer is stale when it contradicts a
write acknowledged before the request was sent: a key just created "does
not exist", a revoked or deleted identity is still served, a rotated key
still encrypts with its old version.  The same runs with one node killed
(SIGKILL) before the sequences, and with one node paused (SIGSTOP) for
longer than the read lease in the middle of them.

A request that gets no answer (connection refused, a timeout, a 5xx) is not
stale: the client tries another random node, as a client does after a
connection error.  A write without an answer may still be applied later,
so its sequence is abandoned and a new one takes its place.

C{MINKMS_FRESH_READS_SEED} replays a run's choice of sequence kinds, names
and nodes (the interleaving of the concurrent clients still varies);
C{MINKMS_FRESH_READS_SEQUENCES} runs fewer sequences for a quick look.
"""

import collections
import os
import random

import attrs
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from minkms import crypto
from minkms.apikey import APIKey, api_key_from_seed
from minkms.client import ClientError, KMSClient
from minkms.errors import (
    ErrDecrypt,
    ErrIdentityNotFound,
    ErrKeyNotFound,
    ErrPermission,
    ErrPolicyNotFound,
    KMSError,
)
from minkms.wire import kms_pb2 as pb
from minkms.wire.commands import (
    CLUSTER_STATUS,
    ENCLAVE_CREATE,
    IDENTITY_CREATE,
    IDENTITY_DELETE,
    KEY_CREATE,
    KEY_DECRYPT,
    KEY_DELETE,
    KEY_ENCRYPT,
    KEY_GENERATE,
    KEY_STATUS,
    POLICY_ASSIGN,
    POLICY_CREATE,
)
from tests.harness import form_cluster, leader_of, write_config

ENCLAVE = "e"
SEQUENCES = int(os.environ.get("MINKMS_FRESH_READS_SEQUENCES", "1000"))
CLIENT_TASKS = 16
REQUEST_TIMEOUT = 10.0  # as the SysAdmin client of form_cluster
TRIES = 10
READ_LEASE = 1.0
PAUSE = 3 * READ_LEASE
SHOWN = 12
SHARED_KEYS = ("shared-a", "shared-b")
# Only a failed assertion is expected: a broken run or a hang still fails the suite.

OK = object()


class NoAnswer(Exception):
    """A write got no answer (it may yet be applied), or no node answered at all."""


class BrokenRun(Exception):
    """The run could not test what it is for; not a finding about the server."""


@attrs.frozen
class Finding:
    """An answer that is not the one an up-to-date node gives."""

    sequence: int
    kind: str
    step: str
    node: str
    phase: str
    answer: str

    @property
    def where(self) -> str:
        return f"{self.node} {self.phase or 'before'}"

    def __str__(self):
        phase = f" [{self.phase}]" if self.phase else ""
        return f"#{self.sequence} {self.kind}/{self.step} on {self.node}{phase}: {self.answer}"


@attrs.define
class User:
    """A client task's User identity, whose policy the policy sequences change."""

    client: KMSClient
    identity: str
    denied: str | None = None


@attrs.define
class ClientTask:
    """What one concurrent client keeps between its sequences."""

    rng: random.Random
    user: User | None = None

    async def retire_user(self):
        if self.user:
            await self.user.client.close()
            self.user = None


@attrs.define
class Sequence:
    """One write-then-read sequence: its number and kind, and the client task running it."""

    number: int
    kind: str
    task: ClientTask

    @property
    def rng(self) -> random.Random:
        return self.task.rng


def describe(answer) -> str:
    if isinstance(answer, KMSError):
        return f"{answer.status} {answer.message}"
    if answer is None:
        return "success"
    version = getattr(answer, "Version", None)
    return type(answer).__name__ + ("" if version is None else f" Version={version}")


def user_client(hosts, seed_bytes: bytes) -> KMSClient:
    """A client acting as a fresh API key's identity."""
    key = APIKey.parse(api_key_from_seed(seed_bytes))
    return KMSClient(reactor, hosts, key, insecure=True, timeout=REQUEST_TIMEOUT)


def sleep(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


class FreshReadRun:
    """
    Write-then-read sequences from concurrent client tasks against one
    cluster, counting stale answers and everything that got no answer.

    @ivar phase: what the test is doing to the cluster right now; findings
        carry the phase their request was sent in.
    """

    KINDS = ("key-status", "key-generate", "key-encrypt", "key-rotate", "key-delete", "policy", "identity-delete")

    def __init__(self, nodes, sysadmin: KMSClient, seed: int, labels: dict[str, str]):
        self.hosts = [n.host for n in nodes]
        self.labels = labels
        self.sysadmin = sysadmin
        self.seed = seed
        self.phase = ""
        self.stale: list[Finding] = []
        self.unexpected: list[Finding] = []
        self.answers = collections.Counter()
        self.checked = collections.Counter()
        self.sent = collections.Counter()
        self.refused = 0
        self.no_answer = collections.Counter()
        self.abandoned = 0
        self.running = 0
        self.started = 0

    # -- running ---------------------------------------------------------------

    def start(self) -> defer.Deferred:
        """Start the client tasks; fires when SEQUENCES sequences have been checked."""
        tasks = [defer.ensureDeferred(self.client_task(i)) for i in range(CLIENT_TASKS)]
        done = defer.gatherResults(tasks, consumeErrors=True)
        done.addErrback(lambda failure: failure.value.subFailure)
        return done

    @property
    def completed(self) -> int:
        return sum(self.checked.values())

    async def client_task(self, index: int):
        state = ClientTask(random.Random(f"{self.seed}/{index}"))
        try:
            while self.completed + self.running < SEQUENCES:
                if self.started >= 2 * SEQUENCES:
                    raise BrokenRun(f"{self.abandoned} sequences abandoned: too few answers to test anything")
                self.started += 1
                self.running += 1
                sequence = Sequence(self.started, state.rng.choice(self.KINDS), state)
                try:
                    await getattr(self, sequence.kind.replace("-", "_"))(sequence)
                    self.checked[sequence.kind] += 1
                except NoAnswer:
                    self.abandoned += 1
                    if sequence.kind == "policy":
                        # a late assignment must not land on the next sequence's user
                        await state.retire_user()
                finally:
                    self.running -= 1
        finally:
            await state.retire_user()

    async def send(self, rng, client: KMSClient, code: int, message, write: bool):
        """
        One request to a random node.

        @return: C{(host, phase, reply or KMSError)}.
        @raise NoAnswer: a write without an answer, or TRIES requests without one.
        """
        for _ in range(TRIES):
            host = rng.choice(self.hosts)
            phase = self.phase
            self.sent[self.labels[host], phase] += 1
            try:
                reply = await client.call(code, message, enclave=ENCLAVE, host=host)
            except KMSError as e:
                if e.status < 500:
                    self.answers[host] += 1
                    return host, phase, e
                self.no_answer[self.labels[host], describe(e)] += 1
            except ClientError as e:
                if "connection refused" in str(e):
                    self.refused += 1
                    continue
                self.no_answer[self.labels[host], str(e).split(": ", 2)[-1]] += 1
            else:
                self.answers[host] += 1
                return host, phase, reply
            if write:
                raise NoAnswer(f"{describe(message)} on {self.labels[host]}")
        raise NoAnswer(f"no node answered {describe(message)}")

    async def step(
        self,
        sequence: Sequence,
        step: str,
        client: KMSClient,
        code: int,
        message,
        write=False,
        want=OK,
        stale=(),
        judge=None,
    ):
        """
        Send one request of a sequence and judge its answer.

        @param want: C{OK} for success (then C{judge}, if given, says "ok",
            "stale" or "unexpected" about the reply), or the error wanted.
        @param stale: errors that a node missing the sequence's earlier
            writes gives instead of success.
        @return: the reply when it is the one wanted, else C{None}.
        """
        host, phase, answer = await self.send(sequence.rng, client, code, message, write)
        failed = isinstance(answer, KMSError)
        if want is OK:
            if failed:
                verdict = "stale" if answer in stale else "unexpected"
            else:
                verdict = judge(answer) if judge else "ok"
        elif failed:
            verdict = "ok" if answer == want else "unexpected"
        else:
            verdict = "stale"
        if verdict == "ok":
            return answer if answer is not None else True
        finding = Finding(sequence.number, sequence.kind, step, self.labels[host], phase, describe(answer))
        (self.stale if verdict == "stale" else self.unexpected).append(finding)
        return None

    # -- the sequences -----------------------------------------------------------

    async def create_key(self, sequence: Sequence) -> str | None:
        name = f"k{sequence.number}"
        ok = await self.step(sequence, "create", self.sysadmin, KEY_CREATE, pb.CreateKeyRequest(Name=name), write=True)
        return name if ok else None

    async def decrypt(self, sequence, name, ciphertext, plaintext, stale=(ErrKeyNotFound,)):
        def judge(reply):
            return "ok" if reply.Plaintext == plaintext else "unexpected"

        await self.step(
            sequence,
            "decrypt",
            self.sysadmin,
            KEY_DECRYPT,
            pb.DecryptRequest(Name=name, Ciphertext=ciphertext),
            stale=stale,
            judge=judge,
        )

    async def key_status(self, sequence):
        name = await self.create_key(sequence)
        if name:
            await self.step(
                sequence, "status", self.sysadmin, KEY_STATUS, pb.KeyStatusRequest(Name=name), stale=(ErrKeyNotFound,)
            )

    async def key_generate(self, sequence):
        name = await self.create_key(sequence)
        if not name:
            return
        reply = await self.step(
            sequence, "generate", self.sysadmin, KEY_GENERATE, pb.GenerateKeyRequest(Name=name), stale=(ErrKeyNotFound,)
        )
        if reply:
            await self.decrypt(sequence, name, reply.Ciphertext, reply.Plaintext)

    async def key_encrypt(self, sequence):
        name = await self.create_key(sequence)
        if not name:
            return
        plaintext = sequence.rng.randbytes(16)
        reply = await self.step(
            sequence,
            "encrypt",
            self.sysadmin,
            KEY_ENCRYPT,
            pb.EncryptRequest(Name=name, Plaintext=plaintext),
            stale=(ErrKeyNotFound,),
        )
        if reply:
            await self.decrypt(sequence, name, reply.Ciphertext, plaintext)

    async def key_rotate(self, sequence):
        name = await self.create_key(sequence)
        if not name:
            return
        rotated = await self.step(
            sequence,
            "rotate",
            self.sysadmin,
            KEY_CREATE,
            pb.CreateKeyRequest(Name=name, AddVersion=True),
            write=True,
            stale=(ErrKeyNotFound,),
        )
        if not rotated:
            return

        def judge(reply):
            versions = {reply.Version, crypto.parse_ciphertext_version(reply.Ciphertext)}
            return {frozenset({2}): "ok", frozenset({1}): "stale"}.get(frozenset(versions), "unexpected")

        plaintext = sequence.rng.randbytes(16)
        reply = await self.step(
            sequence,
            "encrypt",
            self.sysadmin,
            KEY_ENCRYPT,
            pb.EncryptRequest(Name=name, Plaintext=plaintext),
            stale=(ErrKeyNotFound,),
            judge=judge,
        )
        if reply:
            # a node that has version 1 only calls a version 2 ciphertext invalid
            await self.decrypt(sequence, name, reply.Ciphertext, plaintext, stale=(ErrKeyNotFound, ErrDecrypt))

    async def key_delete(self, sequence):
        name = await self.create_key(sequence)
        if not name:
            return
        await self.step(
            sequence, "status", self.sysadmin, KEY_STATUS, pb.KeyStatusRequest(Name=name), stale=(ErrKeyNotFound,)
        )
        deleted = await self.step(
            sequence,
            "delete",
            self.sysadmin,
            KEY_DELETE,
            pb.DeleteKeyRequest(Name=name, AllVersions=True),
            write=True,
            stale=(ErrKeyNotFound,),
        )
        if deleted:
            await self.step(
                sequence,
                "status-after-delete",
                self.sysadmin,
                KEY_STATUS,
                pb.KeyStatusRequest(Name=name),
                want=ErrKeyNotFound,
            )

    async def policy(self, sequence):
        """
        Give the client task's User a new policy that allows KEY:STATUS on
        one shared key and denies it on the other (the other way round from
        its last policy), then act as the User.
        """
        if not sequence.task.user:
            client = user_client(self.hosts, sequence.rng.randbytes(32))
            identity = client.api_key.identity
            created = await self.step(
                sequence,
                "create-identity",
                self.sysadmin,
                IDENTITY_CREATE,
                pb.CreateIdentityRequest(Identity=identity, Privilege="User"),
                write=True,
            )
            if not created:
                await client.close()
                return
            sequence.task.user = User(client, identity)
        me = sequence.task.user
        denied = SHARED_KEYS[0] if me.denied == SHARED_KEYS[1] else SHARED_KEYS[1]
        allowed = SHARED_KEYS[1 - SHARED_KEYS.index(denied)]
        name = f"p{sequence.number}"
        request = pb.CreatePolicyRequest(Name=name)
        request.Allow["KEY:STATUS"].Rules["shared-*"].SetInParent()
        request.Deny["KEY:STATUS"].Rules[denied].SetInParent()
        if not await self.step(sequence, "create-policy", self.sysadmin, POLICY_CREATE, request, write=True):
            return
        assigned = await self.step(
            sequence,
            "assign",
            self.sysadmin,
            POLICY_ASSIGN,
            pb.AssignPolicyRequest(Identity=me.identity, Policy=name),
            write=True,
            stale=(ErrPolicyNotFound, ErrIdentityNotFound),
        )
        if not assigned:
            return
        me.denied = denied
        await self.step(
            sequence, "allowed", me.client, KEY_STATUS, pb.KeyStatusRequest(Name=allowed), stale=(ErrPermission,)
        )
        await self.step(sequence, "denied", me.client, KEY_STATUS, pb.KeyStatusRequest(Name=denied), want=ErrPermission)

    async def identity_delete(self, sequence):
        client = user_client(self.hosts, sequence.rng.randbytes(32))
        identity = client.api_key.identity
        try:
            created = await self.step(
                sequence,
                "create",
                self.sysadmin,
                IDENTITY_CREATE,
                pb.CreateIdentityRequest(Identity=identity, Privilege="Admin"),
                write=True,
            )
            if not created:
                return
            await self.step(
                sequence, "act", client, KEY_STATUS, pb.KeyStatusRequest(Name=SHARED_KEYS[0]), stale=(ErrPermission,)
            )
            deleted = await self.step(
                sequence,
                "delete",
                self.sysadmin,
                IDENTITY_DELETE,
                pb.DeleteIdentityRequest(Identity=identity),
                write=True,
                stale=(ErrIdentityNotFound,),
            )
            if deleted:
                await self.step(
                    sequence,
                    "act-after-delete",
                    client,
                    KEY_STATUS,
                    pb.KeyStatusRequest(Name=SHARED_KEYS[0]),
                    want=ErrPermission,
                )
        finally:
            await client.close()

    # -- reporting ---------------------------------------------------------------

    def summary(self) -> str:
        def tally(findings, field):
            counts = collections.Counter(getattr(f, field) for f in findings)
            return ", ".join(f"{k or '-'} {v}" for k, v in sorted(counts.items()))

        lines = [
            f"seed {self.seed}: {self.completed} sequences checked "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.checked.items()))}); "
            f"{self.abandoned} abandoned after a write without an answer",
            "answers per node: " + ", ".join(f"{self.labels[h]} {self.answers[h]}" for h in self.hosts),
            f"retried on another node: {self.refused} after a connection error, "
            f"{sum(self.no_answer.values())} without an answer (timeout or 5xx)",
        ]
        lines += [f"  no answer from {node}: {n} x {reason}" for (node, reason), n in self.no_answer.most_common(4)]
        if self.phase:
            lines.append(
                "requests sent per node and phase: "
                + ", ".join(f"{node} {phase or 'before'} {n}" for (node, phase), n in sorted(self.sent.items()))
            )
        lines.append(f"stale answers: {len(self.stale)}")
        if self.stale:
            lines += [f"  by {field}: {tally(self.stale, field)}" for field in ("node", "kind", "step")]
            if self.phase:
                lines.append(f"  by node and phase sent: {tally(self.stale, 'where')}")
            lines += [f"  {f}" for f in self.stale[:SHOWN]]
        lines.append(f"other wrong answers: {len(self.unexpected)}")
        lines += [f"  {f}" for f in self.unexpected[:SHOWN]]
        return "\n".join(lines)


def run_seed() -> int:
    text = os.environ.get("MINKMS_FRESH_READS_SEED")
    return int(text) if text else random.SystemRandom().randrange(2**32)


class FreshReadTests(unittest.TestCase):
    """
    Issue 8's acceptance test: 0 stale answers over SEQUENCES write-then-read
    sequences with 3/3 nodes up, with one node killed, and with one node
    paused for longer than the read lease.
    """

    timeout = 900

    async def cluster(self):
        """A formed 3-node cluster with the enclave and the shared keys on every node."""
        config = write_config(self.mktemp(), f"read_lease: {READ_LEASE}s")
        nodes, client = await form_cluster(self, extra_args=["--config", config])
        first = nodes[0].host
        await client.call(ENCLAVE_CREATE, pb.CreateEnclaveRequest(Name=ENCLAVE), host=first)
        for name in SHARED_KEYS:
            await client.call(KEY_CREATE, pb.CreateKeyRequest(Name=name), enclave=ENCLAVE, host=first)
        for node in nodes:
            for _attempt in range(300):
                try:
                    await client.call(
                        KEY_STATUS, pb.KeyStatusRequest(Name=SHARED_KEYS[-1]), enclave=ENCLAVE, host=node.host
                    )
                    break
                except (KMSError, ClientError):
                    await sleep(0.1)
            else:
                raise BrokenRun(f"{node.host} never saw the set-up writes")
        return nodes, client

    async def roles(self, client, nodes):
        """The leader, and a label per host naming the node and its role at the start."""
        leader = await leader_of(client, nodes)
        if leader is None:
            raise BrokenRun("the cluster has no leader")
        labels = {n.host: f"n{i} ({'leader' if n is leader else 'follower'} at start)" for i, n in enumerate(nodes)}
        return leader, labels

    async def wait_for_new_leader(self, client, survivors, dead):
        """Wait until every survivor sees the dead node down and one survivor leads."""
        for _attempt in range(300):
            views = []
            for node in survivors:
                try:
                    views.append(await client.call(CLUSTER_STATUS, pb.ClusterStatusRequest(), host=node.host))
                except (KMSError, ClientError):
                    break
            else:
                leaders = {s.Host for v in views for s in v.NodesUp.values() if s.Role == "Leader"}
                if (
                    all(dead.host in v.NodesDown.values() for v in views)
                    and len(leaders) == 1
                    and dead.host not in leaders
                ):
                    return
            await sleep(0.1)
        raise BrokenRun("the survivors did not elect a new leader")

    def finish(self, run: FreshReadRun, live_hosts):
        """Print the run's figures; check it spread requests; assert 0 stale answers."""
        summary = run.summary()
        print(summary)
        if run.completed < SEQUENCES:
            raise BrokenRun(f"only {run.completed} sequences checked\n{summary}")
        total = sum(run.answers.values())
        for host in live_hosts:
            if run.answers[host] < total / (4 * len(live_hosts)):
                raise BrokenRun(f"the client hardly used {run.labels[host]}\n{summary}")
        self.assertEqual((len(run.stale), len(run.unexpected)), (0, 0), summary)

    async def test_all_nodes_up(self):
        nodes, client = await self.cluster()
        _, labels = await self.roles(client, nodes)
        run = FreshReadRun(nodes, client, run_seed(), labels)
        await run.start()
        self.finish(run, run.hosts)

    async def test_one_node_killed(self):
        """The leader is killed before the sequences; the client still tries every node."""
        nodes, client = await self.cluster()
        leader, labels = await self.roles(client, nodes)
        leader.kill()
        await client.close()
        await self.wait_for_new_leader(client, [n for n in nodes if n is not leader], leader)
        run = FreshReadRun(nodes, client, run_seed(), labels)
        await run.start()
        if run.refused == 0:
            raise BrokenRun("no request went to the killed node\n" + run.summary())
        self.finish(run, [n.host for n in nodes if n is not leader])

    async def test_one_node_paused(self):
        """
        A follower is paused for PAUSE seconds (longer than the read lease)
        once a quarter of the sequences are done, then resumed.
        """
        nodes, client = await self.cluster()
        leader, labels = await self.roles(client, nodes)
        follower = next(n for n in nodes if n is not leader)
        run = FreshReadRun(nodes, client, run_seed(), labels)
        done = run.start()
        while run.completed < SEQUENCES // 4 and not done.called:
            await sleep(0.05)
        run.phase = "paused"
        follower.pause()
        await sleep(PAUSE)
        answered_before = run.answers[follower.host]
        follower.resume()
        run.phase = "after resume"
        await done
        if run.answers[follower.host] == answered_before:
            raise BrokenRun("the paused node answered nothing after it was resumed\n" + run.summary())
        self.finish(run, run.hosts)
