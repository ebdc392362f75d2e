"""Shared session-ticket keys: processes resume each other's sessions (issue 16)."""

from __future__ import annotations

import logging
import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from twistls import ClientContextFactory, ServerContextFactory
from twistls._ticketkeys import read_key_file, rotate_key_file, write_key_file, new_key
from twistls.errors import ConfigurationError
from tests._pki import pki
from tests._pump import EnginePair


def _connect(client: ClientContextFactory, server: ServerContextFactory) -> EnginePair:
    """A handshake, a message each way (the client reads its tickets), close_notify both ways."""
    pair = EnginePair(client.create_engine(peer_address=("127.0.0.1", 443)), server.create_engine()).start()
    pair.pump()
    pair.server.send_plaintext(b"hello")
    pair.client.send_plaintext(b"hi")
    pair.pump()
    pair.client.close()
    pair.pump()
    pair.server.close()
    pair.pump()
    return pair


class TicketKeyFileTests(SynchronousTestCase):
    """Key files: format, rotation, permissions, errors."""

    def _path(self) -> str:
        return os.path.join(tempfile.mkdtemp(prefix="twistls-tickets-"), "tickets.key")

    def test_rotate_puts_new_key_first_and_drops_oldest(self) -> None:
        """Rotation makes the file if missing, puts a new key first, keeps at most three, mode 0600."""
        path = self._path()
        first = rotate_key_file(path)
        self.assertEqual(len(first), 1)
        for _ in range(4):
            keys = rotate_key_file(path)
        self.assertEqual(len(keys), 3)
        self.assertEqual(read_key_file(path)[0], keys)
        self.assertNotIn(first[0], keys)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_malformed_file_refused_without_echoing_it(self) -> None:
        """A malformed key file is a ConfigurationError naming the line, never quoting its content."""
        path = self._path()
        with open(path, "w") as f:
            f.write("c2VjcmV0LXNob3J0\n")
        with self.assertRaises(ConfigurationError) as cm:
            read_key_file(path)
        self.assertIn("line 1", str(cm.exception))
        self.assertNotIn("c2VjcmV0", str(cm.exception))

    def test_world_readable_file_warns(self) -> None:
        """A key file others can read loads, with a warning naming it."""
        path = self._path()
        write_key_file(path, [new_key()])
        os.chmod(path, 0o644)
        with self.assertLogs("twistls", logging.WARNING) as logs:
            ServerContextFactory(pki().server.cert, pki().server.key, ticket_key_file=path)
        self.assertIn("readable by other users", "\n".join(logs.output))

    def test_file_others_can_write_refused(self) -> None:
        """A key file that group or others can write is refused (its writers could forge tickets)."""
        path = self._path()
        write_key_file(path, [new_key()])
        for mode in (0o620, 0o602):
            os.chmod(path, mode)
            with self.assertRaises(ConfigurationError) as cm:
                read_key_file(path)
            self.assertIn("writable by other users", str(cm.exception))

    def test_file_owned_by_another_user_refused(self) -> None:
        """A key file owned by another user (not root) is refused; the twin, our own file, loads."""
        path = self._path()
        write_key_file(path, [new_key()])
        self.assertEqual(len(read_key_file(path)[0]), 1)
        if os.geteuid() != 0:
            raise self.skipTest("chown to another user needs root")  # type: ignore[misc]
        os.chown(path, 54321, -1)
        with self.assertRaises(ConfigurationError) as cm:
            read_key_file(path)
        self.assertIn("belongs to uid 54321", str(cm.exception))

    def test_key_repr_hides_secrets(self) -> None:
        """A key's repr shows its public name only."""
        key = new_key()
        self.assertNotIn(key.aes_key.hex(), repr(key))
        self.assertIn(key.name.hex(), repr(key))

    def test_contradictory_settings_refused(self) -> None:
        """A ticket key file with session_tickets=False is a ConfigurationError."""
        path = self._path()
        rotate_key_file(path)
        with self.assertRaises(ConfigurationError):
            ServerContextFactory(pki().server.cert, pki().server.key, ticket_key_file=path, session_tickets=False)


class SharedTicketTests(SynchronousTestCase):
    """Two servers ("processes") sharing a key file resume each other's sessions."""

    def setUp(self) -> None:
        self.path = os.path.join(tempfile.mkdtemp(prefix="twistls-tickets-"), "tickets.key")
        rotate_key_file(self.path)

    def _server(self, **kw: object) -> ServerContextFactory:
        p = pki()
        return ServerContextFactory(p.server.cert, p.server.key, session_cache_size=0, **kw)  # type: ignore[arg-type]

    def _resumes_across(self, a: ServerContextFactory, b: ServerContextFactory, version: str) -> bool:
        client = ClientContextFactory("localhost", cafile=pki().cafile, maximum_version=version)
        first = _connect(client, a)
        self.assertTrue(first.client.handshake_done)
        second = _connect(client, b)
        self.assertTrue(second.client.handshake_done)
        return second.client.session_reused()

    def test_resumes_across_servers_tls13(self) -> None:
        """A TLS 1.3 ticket from one server resumes on another with the same key file."""
        self.assertTrue(self._resumes_across(self._server(ticket_key_file=self.path), self._server(ticket_key_file=self.path), "TLSv1.3"))

    def test_resumes_across_servers_tls12(self) -> None:
        """A TLS 1.2 ticket from one server resumes on another with the same key file."""
        self.assertTrue(self._resumes_across(self._server(ticket_key_file=self.path), self._server(ticket_key_file=self.path), "TLSv1.2"))

    def test_every_resumption_resumes_tls13(self) -> None:
        """Resuming again and again, alternating servers, resumes every time (each resumption brings a fresh ticket)."""
        self._resumes_every_time("TLSv1.3")

    def test_every_resumption_resumes_tls12(self) -> None:
        """The same under TLS 1.2, where the ticket is kept rather than renewed."""
        self._resumes_every_time("TLSv1.2")

    def _resumes_every_time(self, version: str) -> None:
        servers = [self._server(ticket_key_file=self.path), self._server(ticket_key_file=self.path)]
        client = ClientContextFactory("localhost", cafile=pki().cafile, maximum_version=version)
        _connect(client, servers[0])
        resumed = [_connect(client, servers[i % 2]).client.session_reused() for i in range(6)]
        self.assertEqual(resumed, [True] * 6)

    def test_no_resumption_across_servers_without_shared_keys(self) -> None:
        """The twin: without a shared key file each server has its own key, and the ticket is refused (full handshake)."""
        self.assertFalse(self._resumes_across(self._server(), self._server(), "TLSv1.3"))

    def test_rotation_keeps_old_tickets_and_issues_new_ones(self) -> None:
        """After a rotation and reload, a ticket under the old key still resumes, and the new ticket is under the new key."""
        a, b = self._server(ticket_key_file=self.path), self._server(ticket_key_file=self.path)
        client = ClientContextFactory("localhost", cafile=pki().cafile)
        _connect(client, a)
        old_name = read_key_file(self.path)[0][0].name
        rotate_key_file(self.path)
        b.reload()
        second = _connect(client, b)
        self.assertTrue(second.client.session_reused())
        # the renewed ticket is under the new key: a server that only knows the new key resumes it
        only_new = os.path.join(os.path.dirname(self.path), "only-new.key")
        write_key_file(only_new, read_key_file(self.path)[0][:1])
        self.assertNotEqual(read_key_file(only_new)[0][0].name, old_name)
        third = _connect(client, self._server(ticket_key_file=only_new))
        self.assertTrue(third.client.session_reused())

    def test_ticket_under_dropped_key_not_resumed(self) -> None:
        """A ticket whose key was rotated out gets a full handshake, not an error."""
        a = self._server(ticket_key_file=self.path)
        client = ClientContextFactory("localhost", cafile=pki().cafile)
        _connect(client, a)
        write_key_file(self.path, [new_key()])
        a.reload()
        again = _connect(client, a)
        self.assertTrue(again.client.handshake_done)
        self.assertFalse(again.client.session_reused())


class MkTicketKeyCommandTests(SynchronousTestCase):
    """``twistls mkticketkey FILE [--rotate]``."""

    def test_make_then_rotate(self) -> None:
        """The command makes a one-key file, refuses to overwrite it, and --rotate puts a new key first."""
        from twistls.cli import main

        path = os.path.join(tempfile.mkdtemp(prefix="twistls-tickets-"), "t.key")
        self.assertEqual(main(["mkticketkey", path]), 0)
        first = read_key_file(path)[0]
        self.assertEqual(len(first), 1)
        self.assertEqual(main(["mkticketkey", path]), 1)
        self.assertEqual(main(["mkticketkey", path, "--rotate"]), 0)
        keys = read_key_file(path)[0]
        self.assertEqual(len(keys), 2)
        self.assertEqual(keys[1], first[0])
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_rotate_missing_file_fails(self) -> None:
        """--rotate on a missing file exits 1 instead of inventing one."""
        from twistls.cli import main

        path = os.path.join(tempfile.mkdtemp(prefix="twistls-tickets-"), "missing.key")
        self.assertEqual(main(["mkticketkey", path, "--rotate"]), 1)
        self.assertFalse(os.path.exists(path))


class TicketAcrossClientPoliciesTests(SynchronousTestCase):
    """A session carries the client certificate verified when it was made:
    a server that would not accept that certificate must not resume it,
    even with the same key file and certificate (the session ID context
    covers the client-certificate policy)."""

    def setUp(self) -> None:
        self.path = os.path.join(tempfile.mkdtemp(prefix="twistls-tickets-"), "tickets.key")
        rotate_key_file(self.path)

    def _server(self, **kw: object) -> ServerContextFactory:
        p = pki()
        return ServerContextFactory(p.server.cert, p.server.key, session_cache_size=0, ticket_key_file=self.path, **kw)  # type: ignore[arg-type]

    def _client(self, version: str) -> ClientContextFactory:
        p = pki()
        return ClientContextFactory(
            "localhost", cafile=p.cafile, certificate=p.client.cert, private_key=p.client.key, maximum_version=version
        )

    def _check(self, version: str) -> None:
        client = self._client(version)
        first = _connect(client, self._server(client_cafile=pki().cafile))
        self.assertTrue(first.server.handshake_done)
        # Another service: same certificate, same key file, clients of another CA only.
        other = self._server(client_cafile=pki().other_cafile)
        second = EnginePair(client.create_engine(peer_address=("127.0.0.1", 443)), other.create_engine()).start()
        second.pump()
        self.assertFalse(second.server.handshake_done and second.server.session_reused())
        self.assertFalse(second.server.handshake_done)  # a full handshake, and the CA1 certificate refused

    def test_tls13(self) -> None:
        self._check("TLSv1.3")

    def test_tls12(self) -> None:
        self._check("TLSv1.2")

    def test_same_policy_still_resumes(self) -> None:
        """The twin: the same client policy on both servers resumes."""
        client = self._client("TLSv1.3")
        _connect(client, self._server(client_cafile=pki().cafile))
        second = _connect(client, self._server(client_cafile=pki().cafile))
        self.assertTrue(second.server.handshake_done)
        self.assertTrue(second.server.session_reused())

    def test_reload_with_other_client_cas_does_not_resume(self) -> None:
        """A reload whose client CA file now names another CA does not resume sessions verified under the old one."""
        import shutil

        cas = os.path.join(os.path.dirname(self.path), "client-cas.pem")
        shutil.copy(pki().cafile, cas)
        server = self._server(client_cafile=cas)
        client = self._client("TLSv1.3")
        _connect(client, server)
        shutil.copy(pki().other_cafile, cas)
        server.reload()
        second = EnginePair(client.create_engine(peer_address=("127.0.0.1", 443)), server.create_engine()).start()
        second.pump()
        self.assertFalse(second.server.handshake_done)
