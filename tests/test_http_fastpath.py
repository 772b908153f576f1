"""
The API channel's one-pass path (L{minkms.server.http.parse_head} and
L{LimitedRequest.write}) gives the answers Twisted's own line-by-line
parser and writer give: the same bytes are sent over real TLS to one node
with the fast path on and off, and the two byte streams the server sends
back must be equal (but for the C{Date} header's second), for ordinary,
pipelined, split, malformed, oversized, chunked, HTTP/1.0 and refused
requests.  Each exchange ends with the server closing the connection (a
last request with C{Connection: close}, or an answer that closes it).
"""

import re
import socket
import time

from twisted.internet import threads
from twisted.trial import unittest

from minkms.server import http as api_http
from minkms.server.http import MAX_BODY, MAX_FAST_FIELDS, MAX_FAST_HEAD, APIChannel, parse_head
from minkms.wire import kms_pb2 as pb
from tests.test_conformance import KEY_STATUS, ServerTestCase, frame

STATUS_BODY = frame(KEY_STATUS, pb.KeyStatusRequest(Name="k1").SerializeToString())


def post(path: bytes, body: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    """A POST as Go's transport writes it, with C{extra} header lines before the blank line."""
    return (
        b"POST %s %s\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: %d\r\n"
        b"Accept: application/*\r\nContent-Type: application/octet-stream\r\nAccept-Encoding: gzip\r\n%s\r\n"
        % (path, version, len(body), extra)
    ) + body


def get(path: bytes, extra: bytes = b"", method: bytes = b"GET", version: bytes = b"HTTP/1.1") -> bytes:
    return b"%s %s %s\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n%s\r\n" % (method, path, version, extra)


STATUS = post(b"/v1/kms/e1", STATUS_BODY)
LAST = post(b"/v1/kms/e1", STATUS_BODY, b"Connection: close\r\n")
"""An ordinary request, and one after which the server closes the connection."""


def statuses(stream: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d\d\d) ", stream)]


class FastPathTests(ServerTestCase):
    """The same requests, answered with the one-pass path and without it."""

    timeout = 240

    async def setUp(self):
        await super().setUp()
        await self.enclave()
        await self.key("k1")
        self.context = self.raw().context
        self.heads = []
        self.patch(api_http, "parse_head", self._counting_parse_head)

    def _counting_parse_head(self, buffer):
        head = parse_head(buffer)
        self.heads.append(head is not None)
        return head

    def exchange(self, pieces) -> bytes:
        """Send C{pieces} on one connection, a moment apart; all the server sends until it closes."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=30) as sock:
            with self.context.wrap_socket(sock) as tls:
                for i, piece in enumerate(pieces):
                    if i:
                        time.sleep(0.05)  # (a TLS record of its own is a read of its own on the server anyway)
                    try:
                        tls.sendall(piece)
                    except OSError:
                        break
                received = []
                while True:
                    try:
                        chunk = tls.recv(65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    received.append(chunk)
        return re.sub(rb"\r\nDate: [^\r\n]*\r\n", b"\r\nDate: (now)\r\n", b"".join(received))

    async def same_answers(self, *pieces, fast: bool) -> bytes:
        """
        The server's answer to C{pieces} with the fast path on, which must
        equal its answer with it off; C{fast} says whether the fast path
        must have taken at least one head.
        """
        self.heads.clear()
        quick = await threads.deferToThread(self.exchange, pieces)
        self.assertEqual(any(self.heads), fast, self.heads)
        self.patch(APIChannel, "fast_path", False)
        try:
            self.heads.clear()
            stock = await threads.deferToThread(self.exchange, pieces)
            self.assertEqual(self.heads, [])
        finally:
            self.patch(APIChannel, "fast_path", True)
        self.assertEqual(quick, stock)
        return quick

    async def test_ordinary_one_at_a_time(self):
        answers = await self.same_answers(
            get(b"/version"),
            STATUS,
            get(b"/v1/health/live"),
            get(b"/no/such/path"),
            get(b"/version", method=b"DELETE"),
            get(b"/v1/health/ready?write&x=1"),
            post(b"/v1/kms/e%31", STATUS_BODY),
            post(b"/v1/kms/e1?a=b", STATUS_BODY),
            LAST,
            fast=True,
        )
        self.assertEqual(statuses(answers), [200, 200, 200, 404, 405, 200, 200, 200, 200])
        self.assertIn(b"\r\nServer: TwistedWeb/", answers)

    async def test_pipelined(self):
        answers = await self.same_answers(
            get(b"/version") + STATUS + STATUS + get(b"/v1/health/ready") + LAST, fast=True
        )
        self.assertEqual(statuses(answers), [200] * 5)

    async def test_split_heads_and_bodies(self):
        """A head or body split across reads is read by Twisted's parser, and the answer is the same."""
        whole = STATUS + LAST
        cut = STATUS.index(b"\r\n\r\n") + 4
        answers = await self.same_answers(
            STATUS[:20],
            STATUS[20:cut],
            STATUS[cut:],
            STATUS[: cut + 3],
            STATUS[cut + 3 :],
            whole[:-5],
            whole[-5:],
            fast=True,
        )
        self.assertEqual(statuses(answers), [200] * 4)

    async def test_malformed_after_an_ordinary_request(self):
        """Each malformed head, after an ordinary request on the same connection: Twisted's 400 (or close)."""
        for bad in (
            b"GET  /version HTTP/1.1\r\n\r\n",
            b"GET /version HTTP/1.1\r\nHost x\r\n\r\n",
            b"GET /version HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /version HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
            b"GET /version HTTP/1.1\r\nX-A: a\nb\r\n\r\n",
            b"GET /version HTTP/1.2\r\n\r\n",
            b"GET /version http/1.1\r\n\r\n",
            b"GE(T /version HTTP/1.1\r\n\r\n",
            b"GET /ver sion HTTP/1.1\r\n\r\n",
            post(b"/v1/kms/e1", STATUS_BODY, b"Content-Length: 7\r\n"),
            post(b"/v1/kms/e1", STATUS_BODY, b"Transfer-Encoding: chunked\r\n"),
            post(b"/v1/kms/e1", STATUS_BODY).replace(b"Content-Length: ", b"Content-Length: +"),
            post(b"/v1/kms/e1", STATUS_BODY).replace(b"Content-Length: ", b"Content-Length: -"),
            b"POST /v1/kms/e1 HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ):
            answers = await self.same_answers(STATUS + bad + LAST, fast=True)
            self.assertEqual(statuses(answers)[0], 200, bad)
            self.assertNotEqual(statuses(answers)[-1:], [200], bad)

    async def test_unusual_but_valid_heads_go_to_twisted(self):
        """Heads the fast path leaves alone are served exactly as Twisted serves them."""
        for unusual, expected in (
            (get(b"/version", b"X-Folded: a\r\n b\r\n"), 200),
            (get(b"/version", b"X-Latin: caf\xe9\r\n"), 200),
            (get(b"/version", b"X-Ctl: a\x01b\r\n"), 200),
            (get(b"/version\x7f"), 404),
            (get(b"/version", b"Cookie: a=b\r\n"), 200),
            (get(b"/version", b"Connection: keep-alive\r\n"), 200),
            (b"\r\n" + get(b"/version"), 200),
            (get(b"/version", method=b"HEAD"), 200),
            (post(b"/v1/kms/e1", STATUS_BODY, b"Expect: 100-continue\r\n"), 200),
            (get(b"/version", b"Accept: application/octet-stream\r\n"), 200),
        ):
            answers = await self.same_answers(STATUS + unusual + LAST, fast=True)
            continued = [100] if b"Expect" in unusual else []
            self.assertEqual(statuses(answers), [200, *continued, expected, 200], unusual)

    async def test_oversized_heads(self):
        big = b"X-Big: " + b"a" * (MAX_FAST_HEAD + 100) + b"\r\n"
        answers = await self.same_answers(STATUS + get(b"/version", big) + LAST, fast=True)
        self.assertEqual(statuses(answers), [200, 200, 200])
        many = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_FAST_FIELDS + 1))
        answers = await self.same_answers(STATUS + get(b"/version", many) + LAST, fast=True)
        self.assertEqual(statuses(answers), [200, 200, 200])
        too_many = b"".join(b"X-F%d: v\r\n" % i for i in range(501))
        answers = await self.same_answers(STATUS + get(b"/version", too_many) + LAST, fast=True)
        self.assertEqual(statuses(answers), [200, 400])
        too_big = b"X-Big: " + b"a" * 17000 + b"\r\n"
        answers = await self.same_answers(STATUS + get(b"/version", too_big) + LAST, fast=True)
        self.assertEqual(statuses(answers)[0], 200)
        self.assertNotIn(200, statuses(answers)[1:])

    async def test_chunked_body(self):
        chunked = (
            b"POST /v1/kms/e1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (STATUS_BODY[:4], STATUS_BODY[4:]))
            + b"0\r\n\r\n"
        )
        answers = await self.same_answers(chunked, STATUS + LAST, fast=True)
        self.assertEqual(statuses(answers), [200, 200, 200])

    async def test_http10_closes(self):
        answers = await self.same_answers(STATUS + get(b"/version", version=b"HTTP/1.0") + STATUS, fast=True)
        self.assertEqual(statuses(answers), [200, 200])
        answers = await self.same_answers(post(b"/v1/kms/e1", STATUS_BODY, version=b"HTTP/1.0"), fast=False)
        self.assertEqual(statuses(answers), [200])

    async def test_body_too_large_is_refused(self):
        answers = await self.same_answers(
            STATUS
            + post(b"/v1/kms/e1", b"", b"").replace(b"Content-Length: 0", b"Content-Length: %d" % (MAX_BODY + 1)),
            fast=True,
        )
        self.assertEqual(statuses(answers), [200, 413])
        self.assertIn(b"request body too large", answers)

    async def test_errors_and_repeated_headers(self):
        """Error answers and a repeated header (the last one counts, as C{Request.getHeader} has it)."""
        answers = await self.same_answers(
            post(b"/v1/kms/e1", b"\x00\xcb\x00\x00\x00\x05short"),
            get(b"/version", b"Accept: application/octet-stream\r\nACCEPT: application/json\r\n"),
            post(b"/v1/kms/no-such-enclave", STATUS_BODY),
            LAST,
            fast=True,
        )
        self.assertEqual(statuses(answers)[1:], [200, 404, 200])
        self.assertIn(b'"version"', answers)


class ParseHeadTests(unittest.SynchronousTestCase):
    """What L{parse_head} takes and what it leaves to Twisted."""

    def test_ordinary(self):
        method, target, fields, length, end = parse_head(STATUS + b"next")
        self.assertEqual((method, target, length), (b"POST", b"/v1/kms/e1", b"%d" % len(STATUS_BODY)))
        self.assertEqual(STATUS[end:] + b"next", STATUS_BODY + b"next")
        self.assertEqual(fields[b"Content-Type"], [b"application/octet-stream"])
        self.assertEqual(fields[b"User-Agent"], [b"Go-http-client/1.1"])

    def test_values_trimmed_and_repeated(self):
        fields = parse_head(b"GET / HTTP/1.1\r\naccept:  a b \t\r\nACCEPT:\r\n\r\n")[2]
        self.assertEqual(fields, {b"Accept": [b"a b", b""]})

    def test_left_to_twisted(self):
        for head in (
            b"GET / HTTP/1.1\r\nHost: x\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nCookie: a=b\r\n\r\n",
            b"GET / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0x1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \x80\r\n\r\n",
            b"GET / HTTP/1.1\r\n X: a\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
        ):
            self.assertIsNone(parse_head(head), head)

    def test_remembered_head_gives_fresh_fields(self):
        """A head seen before parses the same, into header lists of its own (a request may add to them)."""
        first = parse_head(STATUS)
        first[2][b"Accept"].append(b"text/plain")
        first[2][b"X-New"] = [b"1"]
        second = parse_head(STATUS + b"more")
        self.assertEqual(second[2][b"Accept"], [b"application/*"])
        self.assertNotIn(b"X-New", second[2])
        self.assertEqual(second[:2] + second[3:], first[:2] + first[3:])
        repeated = b"GET / HTTP/1.1\r\nA: 1\r\na: 2\r\n\r\n"
        self.assertEqual(parse_head(repeated)[2], {b"A": [b"1", b"2"]})
        self.assertEqual(parse_head(repeated)[2], {b"A": [b"1", b"2"]})
