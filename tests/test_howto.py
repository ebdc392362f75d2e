"""The HOWTOs in doc/howto: every listing runs, every include resolves, and no
Python code sits in the .rst files untested.

Each ``doc/howto/listings/*.py`` defines ``main(reactor, *args)`` and ends with
``react(main, sys.argv[1:])``; here its ``main`` runs against a throwaway
trustme CA (laid out as ``twistls mkcert`` lays it out) and servers on port 0.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import io
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Callable

import trustme
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import server, static
from twisted.web.resource import Resource

from twistls import ServerContextFactory, TLSWrappingFactory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOWTO = os.path.join(ROOT, "doc", "howto")
LISTINGS = os.path.join(HOWTO, "listings")


@functools.lru_cache(maxsize=None)
def certdir() -> str:
    """ca.pem, server.pem (+chain), server.key, client.pem, client.key from a trustme CA."""
    directory = tempfile.mkdtemp(prefix="twistls-howto-")
    ca = trustme.CA(organization_name="twistls howto CA")
    intermediate = ca.create_child_ca()
    ca.cert_pem.write_to_path(os.path.join(directory, "ca.pem"))
    for name, leaf in (
        ("server", intermediate.issue_cert("localhost", "127.0.0.1", "::1")),
        ("client", intermediate.issue_cert("client.example")),
    ):
        path = os.path.join(directory, f"{name}.pem")
        with open(path, "wb") as f:
            f.write(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key = os.path.join(directory, f"{name}.key")
        leaf.private_key_pem.write_to_path(key)
        os.chmod(key, 0o600)
    return directory


def load(name: str) -> Any:
    path = os.path.join(LISTINGS, name + ".py")
    spec = importlib.util.spec_from_file_location(f"_howto_listing_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def https_server(testcase: TestCase) -> int:
    """A twisted.web site over twistls on 127.0.0.1 for the client listings."""
    root = Resource()
    root.putChild(b"", static.Data(b"hello", "text/plain"))
    d = certdir()
    tls = ServerContextFactory(os.path.join(d, "server.pem"), os.path.join(d, "server.key"))
    port = reactor.listenTCP(0, TLSWrappingFactory(server.Site(root), tls), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


def _client_args(testcase: TestCase) -> list[str]:
    return ["localhost", str(https_server(testcase)), os.path.join(certdir(), "ca.pem")]


def _certdir_args(testcase: TestCase) -> list[str]:
    return [certdir()]


# listing -> (arguments for main, text its output must contain)
CASES: dict[str, tuple[Callable[[TestCase], list[str]], list[str]]] = {
    "client_api": (_client_args, ["verified localhost: TLSv1.", "HTTP/1.0 200 OK"]),
    "client_string": (_client_args, ["twistls:host=localhost", "HTTP/1.0 200 OK"]),
    "serve_web": (_certdir_args, ["serving https://localhost:", "200 hello over twistls"]),
    "twistd_web": (_certdir_args, ["twistd -n web --listen 'twistls:", "200 served by twistd web over twistls"]),
    "starttls_line": (_certdir_args, ["server: OK begin TLS", "server: secret received: the password"]),
    "starttls_smtp": (_certdir_args, ["1 recipient accepted: b@example.com (250)", "delivered: Sent over STARTTLS."]),
    "mutual_tls": (
        _certdir_args,
        ["with a certificate: hello DNS:client.example", "without a certificate: PeerAlertError"],
    ),
    "pinning": (_certdir_args, ["pinned key: ping", "wrong pin: PinMismatchError"]),
    "migrate_twisted": (_certdir_args, ["twistls_client: ping", "twisted_client: ping"]),
    "migrate_m2crypto": (_certdir_args, ["twistls.compat.connectSSL: ping"]),
    "http2_sni_resumption": (
        _certdir_args,
        ["1st: TLSv1.3 h2", "2nd: resumed=True, server_name=localhost", "3rd after reload: no ALPN, HTTP/1.1 200 OK"],
    ),
    "scale_out": (
        _certdir_args,
        ["visit 1: machine A served 127.0.0.1:", "visit 2: machine B served 127.0.0.1:", "resumed on 3 of 3 later visits"],
    ),
    "troubleshooting": (
        _certdir_args,
        [
            "HostnameMismatchError: expected db.example",
            "UntrustedCertificateError: X509 error 20",
            "ProtocolVersionError:",
            "HandshakeTimeoutError:",
            "ConfigurationError:",
        ],
    ),
}


def listing_names() -> list[str]:
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(LISTINGS, "*.py")))


def rst_files() -> list[str]:
    return sorted(glob.glob(os.path.join(HOWTO, "*.rst")))


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


@defer.inlineCallbacks
def settle(limit: float = 5.0):
    """Let connections a listing closed finish closing (both ends), so that
    trial's clean-reactor check sees only what was really left open."""
    from twisted.internet import tcp
    from twisted.internet.task import deferLater

    waited = 0.0
    while waited < limit:
        live = [s for s in reactor.getReaders() + reactor.getWriters() if isinstance(s, tcp.Connection)]
        if not live:
            return
        yield deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class ListingTests(TestCase):
    """Run every listing's ``main()``."""

    timeout = 120

    @defer.inlineCallbacks
    def run_listing(self, name: str):
        make_args, expected = CASES[name]
        args = make_args(self)
        module = load(name)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            yield defer.ensureDeferred(module.main(reactor, *args))
        yield settle()
        text = out.getvalue()
        for fragment in expected:
            self.assertIn(fragment, text, f"{name} printed:\n{text}")


for _name in CASES:
    setattr(
        ListingTests,
        f"test_listing_{_name}",
        (lambda name: lambda self: self.run_listing(name))(_name),
    )


class ListingAsScriptTests(SynchronousTestCase):
    def test_runs_from_the_command_line(self):
        """``python listing.py DIR`` works through ``react(main, sys.argv[1:])``."""
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        done = subprocess.run(
            [sys.executable, os.path.join(LISTINGS, "starttls_line.py"), certdir()],
            capture_output=True, text=True, timeout=60, env=env,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("secret received", done.stdout)


class DocumentTests(SynchronousTestCase):
    def test_every_listing_is_run_by_a_test(self):
        self.assertEqual(listing_names(), sorted(CASES))

    def test_listing_shape(self):
        """Each listing defines main(reactor, ...) and ends with react(main, sys.argv[1:])."""
        for name in listing_names():
            text = read(os.path.join(LISTINGS, name + ".py"))
            self.assertRegex(text, r"(?m)^(async )?def main\(reactor\b", name)
            self.assertTrue(
                text.rstrip().endswith('if __name__ == "__main__":\n    react(main, sys.argv[1:])'), name
            )

    def test_pages_exist(self):
        names = {os.path.basename(p) for p in rst_files()}
        for page in (
            "index.rst",
            "secure-client.rst",
            "serving-twistd.rst",
            "starttls.rst",
            "mutual-tls.rst",
            "pinning-private-ca.rst",
            "migrating.rst",
            "endpoint-strings.rst",
            "troubleshooting.rst",
        ):
            self.assertIn(page, names)

    def test_literalinclude_targets_exist_and_every_listing_is_shown(self):
        shown = set()
        for page in rst_files():
            for target in re.findall(r"^\.\. literalinclude::\s*(\S+)", read(page), re.M):
                path = os.path.normpath(os.path.join(HOWTO, target))
                self.assertTrue(os.path.isfile(path), f"{page}: {target}")
                shown.add(os.path.basename(path)[:-3])
        self.assertEqual(sorted(shown), listing_names())

    def test_literalinclude_options_point_at_real_code(self):
        """``:pyobject:`` names a function or class of the listing; ``:lines:`` stays inside it."""
        directive = re.compile(r"^\.\. literalinclude::\s*(\S+)\n((?:[ \t]+:\w+:.*\n)*)", re.M)
        for page in rst_files():
            for target, options in directive.findall(read(page)):
                source = read(os.path.normpath(os.path.join(HOWTO, target)))
                for option, value in re.findall(r":(\w+):\s*(.*)", options):
                    if option == "pyobject":
                        self.assertRegex(source, rf"(?m)^(async def|def|class) {re.escape(value.strip())}\b", f"{page}: {value}")
                    elif option == "lines":
                        last = max(int(n) for n in re.findall(r"\d+", value))
                        self.assertLessEqual(last, len(source.splitlines()), f"{page}: {target} {value}")

    def test_no_untested_python_blocks(self):
        """Python appears in the pages only through literalinclude of tested listings."""
        pattern = re.compile(r"^\s*\.\. (code-block|code|sourcecode|doctest|testcode)::\s*(python|pycon|py)?\s*$", re.M)
        for page in rst_files():
            for match in pattern.finditer(read(page)):
                language = match.group(2)
                self.assertFalse(
                    match.group(1) in ("doctest", "testcode") or language is not None,
                    f"{os.path.basename(page)} has an untested '{match.group(0).strip()}' block",
                )

    def test_doc_links_resolve(self):
        for page in rst_files():
            for target in re.findall(r":doc:`(?:[^`<]*<)?([^`>]+)>?`", read(page)):
                path = os.path.normpath(os.path.join(HOWTO, target + ".rst"))
                self.assertTrue(os.path.isfile(path), f"{os.path.basename(page)} links to missing {target}")

    def test_index_lists_every_page(self):
        index = read(os.path.join(HOWTO, "index.rst"))
        for page in rst_files():
            name = os.path.basename(page)[:-4]
            if name != "index":
                self.assertRegex(index, rf"(?m)^\s+{re.escape(name)}\s*$", name)

    def test_troubleshooting_covers_every_error(self):
        """Each exception in twistls.errors has a section in troubleshooting.rst."""
        from twistls import errors

        text = read(os.path.join(HOWTO, "troubleshooting.rst"))
        for name in errors.__all__:
            if name[0].isupper():
                self.assertIn(name, text)
