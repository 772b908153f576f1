"""
Error bodies (spec section 7.1): what our server sends, and how our client
reads any error reply exactly as kms-go does.
"""

from twisted.trial.unittest import SynchronousTestCase

from minkms import errors as kms_errors
from minkms.errors import KMSError
from minkms.wire.errors import MAX_ERROR_BODY, error_body, parse_error

KEY_NOT_FOUND_PB = bytes.fromhex("0a 12 6b 65 79 20 64 6f 65 73 20 6e 6f 74 20 65 78 69 73 74".replace(" ", ""))


class ErrorBodyTests(SynchronousTestCase):
    """The server side."""

    def test_json_by_default(self):
        """kms-go's Accept (application/*), none, or anything else: JSON."""
        for accept in ("application/*", None, "", "*/*", "text/plain", "application/json"):
            self.assertEqual(
                error_body(kms_errors.ErrKeyNotFound, accept),
                (b"application/json", b'{"message":"key does not exist"}'),
            )

    def test_protobuf_when_asked(self):
        """Accept: application/octet-stream gives the section 7.1 example bytes."""
        self.assertEqual(
            error_body(kms_errors.ErrKeyNotFound, "application/octet-stream"),
            (b"application/octet-stream", KEY_NOT_FOUND_PB),
        )
        self.assertEqual(
            error_body(kms_errors.ErrKeyNotFound, b"application/octet-stream"),
            (b"application/octet-stream", KEY_NOT_FOUND_PB),
        )

    def test_json_escaping(self):
        """Quotes, backslashes, control and non-ASCII characters stay valid JSON."""
        error = KMSError(400, 'bad "name" \\ \n é')
        ctype, body = error_body(error)
        self.assertEqual(body, '{"message":"bad \\"name\\" \\\\ \\n é"}'.encode())
        self.assertEqual(parse_error(400, ctype, body), error)

    def test_empty_message(self):
        """Even an empty message is written, as the only key."""
        self.assertEqual(error_body(KMSError(500, ""))[1], b'{"message":""}')

    def test_round_trip_canonical(self):
        """Every canonical error survives both formats through our parser."""
        for name in dir(kms_errors):
            error = getattr(kms_errors, name)
            if not (name.startswith("Err") and isinstance(error, KMSError)):
                continue
            for accept in ("application/*", "application/octet-stream"):
                ctype, body = error_body(error, accept)
                self.assertEqual(parse_error(error.status, ctype, body), error)


class ParseErrorTests(SynchronousTestCase):
    """The client rules of section 7.1."""

    def test_protobuf(self):
        """application/octet-stream: field 1 of ErrResponse."""
        self.assertEqual(
            parse_error(404, "application/octet-stream", KEY_NOT_FOUND_PB),
            kms_errors.ErrKeyNotFound,
        )

    def test_json(self):
        """application/json: the message key (or its proto name)."""
        self.assertEqual(
            parse_error(409, "application/json", b'{"message":"key already exists"}'),
            kms_errors.ErrKeyExists,
        )
        self.assertEqual(
            parse_error(409, "application/json", b'{"Message":"key already exists"}'),
            kms_errors.ErrKeyExists,
        )

    def test_bytes_content_type(self):
        """A header value given as bytes is read the same."""
        self.assertEqual(
            parse_error(404, b"application/octet-stream", KEY_NOT_FOUND_PB),
            kms_errors.ErrKeyNotFound,
        )

    def test_content_type_compared_exactly(self):
        """Parameters or another case make the body raw text."""
        body = b'{"message":"key does not exist"}'
        for ctype in ("application/json; charset=utf-8", "Application/JSON", "text/plain", "", None):
            self.assertEqual(parse_error(404, ctype, body), KMSError(404, body.decode()))

    def test_raw_text_verbatim(self):
        """A trailing newline is part of the message."""
        self.assertEqual(parse_error(503, "text/plain", b"not ready\n"), KMSError(503, "not ready\n"))

    def test_first_5000_bytes(self):
        """Only the first 5000 bytes are read."""
        self.assertEqual(MAX_ERROR_BODY, 5000)
        error = parse_error(500, "text/plain", b"x" * 6000)
        self.assertEqual(error.message, "x" * 5000)

    def test_truncated_json_fails_parse(self):
        """A JSON body cut at 5000 bytes no longer parses: the parser's text is the message."""
        body = b'{"message":"' + b"x" * 6000 + b'"}'
        error = parse_error(500, "application/json", body)
        self.assertEqual(error.status, 500)
        self.assertTrue(error.message.startswith("invalid JSON error body: "), error.message)

    def test_unknown_json_key(self):
        """Unknown JSON keys make parsing fail, as in kms-go."""
        error = parse_error(400, "application/json", b'{"message":"x","code":1}')
        self.assertTrue(error.message.startswith("invalid JSON error body: "), error.message)

    def test_bad_protobuf(self):
        """A protobuf body that does not parse gives the parser's text."""
        error = parse_error(400, "application/octet-stream", b"\x0a\x05ab")
        self.assertTrue(error.message.startswith("invalid protobuf error body: "), error.message)
