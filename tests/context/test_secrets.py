"""Secrets: private keys never reach logs or error messages; exposed key
files are flagged; passphrase-protected keys load with ``passphrase=``."""

from __future__ import annotations

import logging
import os
import tempfile

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import TestCase

from twistls import ClientContextFactory, ConfigurationError, ServerContextFactory
from tests._pki import pki
from tests._pump import EnginePair

PASSPHRASE = "correct horse battery staple"


def key_markers(pem: bytes) -> list[str]:
    """Substrings any leak of ``pem`` would contain: its header and body lines."""
    lines = [line.decode() for line in pem.splitlines() if line and not line.startswith(b"-----")]
    return ["PRIVATE KEY", *lines[:3]]


class SecretsTests(TestCase):
    """Key material stays out of messages; passphrases work; loose modes warn."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="twistls-secrets-")
        self.key_pem = open(pki().server.key, "rb").read()
        self.key = serialization.load_pem_private_key(self.key_pem, None)

    def write(self, name: str, data: bytes, mode: int = 0o600) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def encrypted(self, fmt: serialization.PrivateFormat) -> str:
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(PASSPHRASE.encode())
        )
        return self.write(f"enc-{abs(hash(fmt))}.pem", pem)

    def assert_no_secret(self, text: str, pem: bytes) -> None:
        for marker in key_markers(pem):
            self.assertNotIn(marker, text)
        self.assertNotIn(PASSPHRASE, text)

    def handshake(self, server_cf: ServerContextFactory) -> None:
        client = ClientContextFactory("localhost", cafile=pki().cafile).create_engine()
        pair = EnginePair(client, server_cf.create_engine()).start()
        pair.pump()
        self.assertTrue(client.handshake_done)

    # -- passphrases ---------------------------------------------------------------

    def test_passphrase_forms(self):
        """An encrypted key (PKCS#8 or traditional) loads with a bytes, str or callable passphrase."""
        cert = pki().server.cert
        calls = []

        def ask() -> str:
            calls.append(1)
            return PASSPHRASE

        for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
            key = self.encrypted(fmt)
            for passphrase in (PASSPHRASE, PASSPHRASE.encode(), ask):
                self.handshake(ServerContextFactory(cert, key, passphrase=passphrase))
        self.assertEqual(len(calls), 2)

    def test_client_certificate_key_with_passphrase(self):
        """A client certificate's encrypted key loads with passphrase= too."""
        p = pki()
        client_key = serialization.load_pem_private_key(open(p.client.key, "rb").read(), None)
        pem = client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
        key = self.write("client-enc.pem", pem)
        ClientContextFactory("localhost", cafile=p.cafile, certificate=p.client.cert, private_key=key, passphrase=PASSPHRASE)

    def test_encrypted_key_without_passphrase(self):
        """An encrypted key without passphrase= fails at once (no terminal prompt) and says why."""
        key = self.encrypted(serialization.PrivateFormat.PKCS8)
        exc = self.assertRaises(ConfigurationError, ServerContextFactory, pki().server.cert, key)
        self.assertIn("encrypted", str(exc))
        self.assertIn("passphrase", str(exc))
        self.assert_no_secret(str(exc), open(key, "rb").read())

    def test_wrong_passphrase(self):
        """A wrong passphrase is a ConfigurationError that shows neither key nor passphrase."""
        key = self.encrypted(serialization.PrivateFormat.PKCS8)
        exc = self.assertRaises(ConfigurationError, ServerContextFactory, pki().server.cert, key, passphrase="nope")
        self.assertIn("wrong passphrase", str(exc))
        self.assert_no_secret(str(exc), open(key, "rb").read())
        self.assertIsNone(exc.__cause__)
        self.assertTrue(exc.__suppress_context__)

    def test_bad_passphrase_type(self):
        """A passphrase callable returning a non-string is a ConfigurationError."""
        key = self.encrypted(serialization.PrivateFormat.PKCS8)
        self.assertRaises(ConfigurationError, ServerContextFactory, pki().server.cert, key, passphrase=lambda: 42)

    # -- no key material in messages or logs ---------------------------------------

    def test_mismatched_key_message_has_no_pem(self):
        """A key that does not match the certificate: the message names both files, holds no key material."""
        p = pki()
        other = open(p.client.key, "rb").read()
        key = self.write("other.pem", other)
        with self.assertLogs("twistls", level="DEBUG") as captured:
            logging.getLogger("twistls").debug("start")  # assertLogs needs one record
            exc = self.assertRaises(ConfigurationError, ServerContextFactory, p.server.cert, key)
        self.assertIn("does not match", str(exc))
        self.assertIn(key, str(exc))
        self.assert_no_secret(str(exc), other)
        self.assert_no_secret("\n".join(captured.output), other)
        self.assertTrue(exc.__suppress_context__)

    def test_corrupt_key_file_is_not_echoed(self):
        """A damaged key file's contents never appear in the error."""
        damaged = self.key_pem.replace(b"\n", b"\n!", 3)
        key = self.write("damaged.pem", damaged)
        exc = self.assertRaises(ConfigurationError, ServerContextFactory, pki().server.cert, key)
        self.assert_no_secret(str(exc), self.key_pem)

    def test_key_material_never_in_repr_or_vars(self):
        """The factory keeps paths, not key bytes or the passphrase text."""
        key = self.encrypted(serialization.PrivateFormat.PKCS8)
        factory = ServerContextFactory(pki().server.cert, key, passphrase=PASSPHRASE.encode())
        text = repr(vars(factory))
        for marker in key_markers(open(key, "rb").read())[1:]:
            self.assertNotIn(marker, text)
        self.assertNotIn(PASSPHRASE, text)
        self.assertNotIn(repr(PASSPHRASE.encode()), text)

    # -- file modes ------------------------------------------------------------------

    def test_world_readable_key_warns(self):
        """A key file readable by every user logs a warning naming it."""
        key = self.write("loose.pem", self.key_pem, mode=0o644)
        with self.assertLogs("twistls", level="WARNING") as captured:
            ServerContextFactory(pki().server.cert, key)
        self.assertTrue(any(key in line and "chmod" in line for line in captured.output), captured.output)
        self.assert_no_secret("\n".join(captured.output), self.key_pem)

    def test_private_key_file_does_not_warn(self):
        """A 0600 key file logs no warning."""
        key = self.write("tight.pem", self.key_pem, mode=0o600)
        logger = logging.getLogger("twistls")
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        ServerContextFactory(pki().server.cert, key)
        self.assertEqual([r for r in records if r.levelno >= logging.WARNING], [])
