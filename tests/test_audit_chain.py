"""
The audit chain format (pure): a deleted, reordered or edited record, or a
rewritten tail, is found and the first bad record named.
"""

import json

from twisted.trial import unittest

from minkms.audit import chain

KEY = b"k" * 32


def trail(count: int, seal_every: int = 4, key: bytes = KEY) -> list[bytes]:
    head = chain.ChainHead()
    lines = [chain.link(head, {"kind": chain.KIND_START})]
    for i in range(count):
        lines.append(chain.link(head, {"kind": "request", "command": "KEY:ENCRYPT", "object": f"k{i}"}))
        if (i + 1) % seal_every == 0:
            lines.append(chain.link(head, {"kind": "time"}, seal_key=key))
    return lines


def check(lines, key=KEY):
    return chain.verify([("audit.log", b"".join(lines))], key)


class ChainTests(unittest.TestCase):
    def test_intact(self):
        report = check(trail(10))
        self.assertIsNone(report.problem)
        self.assertEqual((report.records, report.seals, report.unsealed_tail), (13, 2, 2))

    def test_edited_record(self):
        lines = trail(10)
        lines[6] = lines[6].replace(b'"k4"', b'"k9"')  # lines[5] is a seal
        problem = check(lines).problem
        self.assertEqual((problem.line, problem.seq), (7, 6))
        self.assertIn("edited", problem.reason)

    def test_edited_record_with_fresh_hash(self):
        lines = trail(10)
        record = json.loads(lines[6])
        record["object"] = "other"
        del record["h"]
        record["h"] = chain.record_hash(record)
        lines[6] = chain.canonical(record) + b"\n"
        problem = check(lines).problem
        self.assertEqual((problem.line, problem.seq), (7, 6))
        self.assertIn("replaced", problem.reason)

    def test_deleted_record(self):
        lines = trail(10)
        del lines[3]
        problem = check(lines).problem
        self.assertEqual((problem.line, problem.seq), (4, 4))
        self.assertIn("expected seq 3", problem.reason)
        self.assertIn("deleted", problem.reason)

    def test_reordered_records(self):
        lines = trail(10)
        lines[3], lines[4] = lines[4], lines[3]
        problem = check(lines).problem
        self.assertEqual((problem.line, problem.seq), (4, 4))
        self.assertIn("expected seq 3", problem.reason)

    def test_rewritten_tail_fails_the_seal(self):
        lines = trail(8, seal_every=8)
        head = chain.ChainHead(1, json.loads(lines[0])["h"])
        forged = [lines[0]] + [chain.link(head, {"kind": "request", "object": "forged"}) for _ in range(8)]
        forged.append(chain.link(head, {"kind": "time"}, seal_key=b"x" * 32))
        problem = check(forged).problem
        self.assertEqual(problem.line, 10)
        self.assertIn("seal does not verify", problem.reason)
        self.assertIsNone(check(forged, key=None).problem)  # only the HSM key tells

    def test_chain_across_files(self):
        lines = trail(10)
        files = [("a", b"".join(lines[:6])), ("b", b"".join(lines[6:]))]
        self.assertIsNone(chain.verify(files, KEY).problem)
        problem = chain.verify([files[0], ("b", b"".join(lines[7:]))], KEY).problem
        self.assertEqual((problem.file, problem.line), ("b", 1))

    def test_garbage_line(self):
        lines = trail(3)
        lines[2] = b"{not json\n"
        problem = check(lines).problem
        self.assertEqual((problem.line, problem.seq), (3, None))
