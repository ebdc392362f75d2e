"""``twistls mkcert``: each run's CA stands on its own, and ``--force`` replaces every file it made."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from typing import Any

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from tests._pump import EnginePair
from tests.tools.test_cli import call_main
from twistls import ClientContextFactory, ServerContextFactory, UntrustedCertificateError
from twistls._engine import Failed, HandshakeCompleted
from twistls.commands._mkcert import MkcertResult, make_certificates


def _certificates(path: str) -> list[x509.Certificate]:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


def _handshake(cafile: str, made: MkcertResult) -> list[Any]:
    """Run a real in-memory TLS handshake to a server using ``made``; return the client's events."""
    client = ClientContextFactory("localhost", cafile=cafile).create_engine()
    server = ServerContextFactory(made.certificate, made.private_key).create_engine()
    pair = EnginePair(client, server).start()
    pair.pump()
    return pair.client_events


class MkcertTrustTests(SynchronousTestCase):
    """Two mkcert CAs are distinct issuers that can share one trust file."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="twistls-test-mkcert-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.first = make_certificates(os.path.join(self.dir, "one"))
        self.second = make_certificates(os.path.join(self.dir, "two"))

    def test_each_run_has_its_own_ca_subjects(self) -> None:
        """Two runs give root and intermediate CAs with different subjects."""
        root1, root2 = _certificates(self.first.cafile)[0], _certificates(self.second.cafile)[0]
        inter1, inter2 = _certificates(self.first.certificate)[1], _certificates(self.second.certificate)[1]
        self.assertNotEqual(root1.subject, root2.subject)
        self.assertNotEqual(inter1.subject, inter2.subject)
        self.assertNotEqual(root1.subject, inter1.subject)

    def test_key_identifiers_link_each_certificate_to_its_issuer(self) -> None:
        """Every certificate has a subject key identifier, and each authority key identifier names its issuer's."""
        root = _certificates(self.first.cafile)[0]
        leaf, inter = _certificates(self.first.certificate)

        def ski(cert: x509.Certificate) -> bytes:
            return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest

        def aki(cert: x509.Certificate) -> bytes | None:
            return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier

        self.assertEqual(aki(root), ski(root))
        self.assertEqual(aki(inter), ski(root))
        self.assertEqual(aki(leaf), ski(inter))
        other_root = _certificates(self.second.cafile)[0]
        self.assertNotEqual(ski(root), ski(other_root))

    def test_two_cas_in_one_trust_file_both_verify(self) -> None:
        """A client trusting both runs' ca.pem in one file completes a real handshake with each run's server."""
        both = os.path.join(self.dir, "both.pem")
        with open(both, "wb") as out:
            for made in (self.first, self.second):
                with open(made.cafile, "rb") as f:
                    out.write(f.read())
        for made in (self.first, self.second):
            events = _handshake(both, made)
            self.assertIn(HandshakeCompleted, [type(e) for e in events], made.directory)

    def test_one_runs_ca_does_not_verify_the_others_server(self) -> None:
        """A client trusting only the first run's CA refuses the second run's server with UntrustedCertificateError."""
        events = _handshake(self.first.cafile, self.second)
        self.assertNotIn(HandshakeCompleted, [type(e) for e in events])
        failed = [e.error for e in events if isinstance(e, Failed)]
        self.assertEqual(len(failed), 1, events)
        self.assertIsInstance(failed[0], UntrustedCertificateError)


class MkcertForceTests(SynchronousTestCase):
    """``--force`` replaces every file of the layout; without it nothing is touched."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="twistls-test-mkcert-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def test_force_replaces_every_file_and_drops_stale_client_files(self) -> None:
        """A --force run without --client replaces ca.pem, server.pem, server.key and removes the earlier client.pem/client.key."""
        self.assertEqual(call_main("mkcert", "--dir", self.dir, "--client", "alice.example")[0], 0)
        before = {name: open(self.path(name), "rb").read() for name in os.listdir(self.dir)}
        self.assertEqual(sorted(before), ["ca.pem", "client.key", "client.pem", "server.key", "server.pem"])
        code, out = call_main("mkcert", "--dir", self.dir, "--force")
        self.assertEqual(code, 0, out)
        self.assertEqual(sorted(os.listdir(self.dir)), ["ca.pem", "server.key", "server.pem"])
        for name in ("ca.pem", "server.pem", "server.key"):
            with open(self.path(name), "rb") as f:
                self.assertNotEqual(f.read(), before[name], name)
        self.assertEqual(stat.S_IMODE(os.stat(self.path("server.key")).st_mode), 0o600)
        events = _handshake(self.path("ca.pem"), make_result(self.dir))
        self.assertIn(HandshakeCompleted, [type(e) for e in events])

    def test_force_replaces_read_only_files(self) -> None:
        """A --force run replaces a server.key and ca.pem that were made read-only, and the new key is 0600."""
        self.assertEqual(call_main("mkcert", "--dir", self.dir)[0], 0)
        os.chmod(self.path("server.key"), 0o400)
        os.chmod(self.path("ca.pem"), 0o444)
        code, out = call_main("mkcert", "--dir", self.dir, "--force")
        self.assertEqual(code, 0, out)
        self.assertEqual(stat.S_IMODE(os.stat(self.path("server.key")).st_mode), 0o600)
        self.assertEqual([n for n in os.listdir(self.dir) if n.startswith(".")], [])

    def test_without_force_stale_client_files_block_and_stay(self) -> None:
        """Without --force an earlier run's client.pem makes mkcert refuse (exit 2) and leaves every file unchanged."""
        self.assertEqual(call_main("mkcert", "--dir", self.dir, "--client", "alice.example")[0], 0)
        os.unlink(self.path("ca.pem"))
        os.unlink(self.path("server.pem"))
        os.unlink(self.path("server.key"))
        code, out = call_main("mkcert", "--dir", self.dir)
        self.assertEqual(code, 2)
        self.assertIn("client.pem", out)
        self.assertIn("--force", out)
        self.assertEqual(sorted(os.listdir(self.dir)), ["client.key", "client.pem"])


def make_result(directory: str) -> MkcertResult:
    return MkcertResult(
        directory=directory,
        cafile=os.path.join(directory, "ca.pem"),
        certificate=os.path.join(directory, "server.pem"),
        private_key=os.path.join(directory, "server.key"),
    )
